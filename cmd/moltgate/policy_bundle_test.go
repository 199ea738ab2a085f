package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/policies/bundletest"
)

// Issue 12: `policy bundle build` checks a directory and writes it as an OPA bundle with
// the given revision; `policy bundle sign` signs it as opa build --signing-key does. The
// engine's bundle source takes it with the matching key and refuses it with another.
func TestPolicyBundleBuildSign(t *testing.T) {
	dir, bad, out := t.TempDir(), t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(dir, "custom.rego"), []byte("package moltgate.custom\n\ndeny contains {\"reason\": \"cli\"} if input.action == \"http.read\"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "custom_test.rego"), []byte("package moltgate.custom_test\n\nimport data.moltgate.custom\n\ntest_cli if {\"reason\": \"cli\"} in custom.deny with input as {\"action\": \"http.read\"}\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "limits.json"), []byte(`{"max": 3}`), 0o600)
	os.WriteFile(filepath.Join(bad, "custom.rego"), []byte("package moltgate.custom\n\ndeny contains {\"reason\": \"x\"} if input.request.toool == \"a\"\n"), 0o600)
	priv, pub, err := bundletest.KeyPair()
	if err != nil {
		t.Fatal(err)
	}
	_, otherPub, err := bundletest.KeyPair()
	if err != nil {
		t.Fatal(err)
	}
	keyFile, file := filepath.Join(out, "signing.pem"), filepath.Join(out, "bundle.tar.gz")
	if err := os.WriteFile(keyFile, priv, 0o600); err != nil {
		t.Fatal(err)
	}

	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"policy", "bundle", "build", dir, "-o", file, "--revision", "r42"}, noEnv, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "revision r42, roots [max moltgate/custom moltgate/custom_test]") {
		t.Errorf("build: got %q, want the revision and roots", stdout.String())
	}
	if err := run(t.Context(), []string{"policy", "bundle", "sign", file, "--signing-key", keyFile, "--alg", "ES256"}, noEnv, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	srv := bundletest.New()
	t.Cleanup(srv.Close)
	srv.Publish(body)
	e, err := policies.New(t.Context(), policies.Config{Bundle: &policies.BundleConfig{URL: srv.URL, VerificationKey: pub, Algorithm: "ES256"}}, nil, nil)
	if err != nil {
		t.Fatalf("a bundle built and signed by the CLI: %v", err)
	}
	if got := e.BundleStatus().Revision; got != "r42" {
		t.Errorf("revision: got %q, want r42", got)
	}
	if _, err := policies.New(t.Context(), policies.Config{Bundle: &policies.BundleConfig{URL: srv.URL, VerificationKey: otherPub, Algorithm: "ES256"}}, nil, nil); err == nil || !strings.Contains(err.Error(), "signature") {
		t.Errorf("another key: got %v, want the signature refused", err)
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"policy", "bundle", "build", bad, "-o", filepath.Join(out, "bad.tar.gz")}, "toool"},
		{[]string{"policy", "bundle", "build", dir}, "--o required"},
		{[]string{"policy", "bundle", "sign", file}, "--signing-key required"},
		{[]string{"policy", "bundle", "sign", file, "--signing-key", filepath.Join(out, "nokey")}, "not a readable file"},
		{[]string{"policy", "bundle", "sign", keyFile, "--signing-key", keyFile}, "read"},
	} {
		if err := run(t.Context(), tt.args, noEnv, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: got %v, want an error naming %q", tt.args, err, tt.want)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "bad.tar.gz")); err == nil {
		t.Error("a set that fails its check was written as a bundle")
	}
}

// Issue 12: policies.bundle is checked key by key, and excludes policies.dir.
func TestConfigPolicyBundle(t *testing.T) {
	cfg, err := loadConfig(writeConfig(t, "policies:\n  bundle:\n    url: https://b.example.com/m.tar.gz\n    verification_key: {env: BUNDLE_KEY}\n    algorithm: ES256\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if b := cfg.Policies.Bundle; b.URL != "https://b.example.com/m.tar.gz" || b.Algorithm != "ES256" || b.VerificationKey.Env != "BUNDLE_KEY" {
		t.Fatalf("got %+v", b)
	}
	_, pub, err := bundletest.KeyPair()
	if err != nil {
		t.Fatal(err)
	}
	env := func(k string) string {
		if k == "BUNDLE_KEY" {
			return string(pub)
		}
		return ""
	}
	if err := cfg.checkSecrets(env); err != nil {
		t.Errorf("a PEM key in the variable: %v", err)
	}
	if err := cfg.checkSecrets(func(string) string { return "not a key" }); err == nil || !strings.Contains(err.Error(), "policies.bundle.verification_key: not a PEM public key") {
		t.Errorf("a key that is no PEM: got %v", err)
	}
	if eb, err := cfg.Policies.engineBundle(env); err != nil || string(eb.VerificationKey) != strings.TrimSpace(string(pub)) {
		t.Errorf("resolved: %v, key %q", err, eb.VerificationKey)
	}
	_, err = loadConfig(writeConfig(t, "policies:\n  dir: /tmp\n  bundle:\n    url: ftp://x\n    poll_interval: -1s\n    algorithm: XX1\n    key_id: k\n"), noEnv)
	for _, want := range []string{"not both", "policies.bundle.url", "policies.bundle.poll_interval", "policies.bundle.algorithm", "policies.bundle.verification_key: required"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want an error naming %s", err, want)
		}
	}
}
