package main

import (
	"strings"
	"testing"
)

// Issue 12: an oci:// policies.bundle.url takes a tag or digest and registry credentials (a
// password by reference), not a bearer token; an http(s) one takes no registry credentials.
func TestConfigPolicyBundleOCI(t *testing.T) {
	cfg, err := loadConfig(writeConfig(t, "policies:\n  bundle:\n    url: oci://registry.example.com/org/policies:v1\n    username: ci\n    password: {env: REGISTRY_PASSWORD}\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	env := func(k string) string {
		if k == "REGISTRY_PASSWORD" {
			return "pa55"
		}
		return ""
	}
	if err := cfg.checkSecrets(noEnv); err == nil || !strings.Contains(err.Error(), "policies.bundle.password") {
		t.Errorf("password variable unset: got %v, want an error naming policies.bundle.password", err)
	}
	eb, err := cfg.Policies.engineBundle(env)
	if err != nil || eb.URL != "oci://registry.example.com/org/policies:v1" || eb.Username != "ci" || string(eb.Password) != "pa55" {
		t.Fatalf("resolved: %v, %+v", err, eb)
	}
	tests := []struct {
		name, yaml, want string
	}{
		{"bad reference", "url: oci://registry.example.com/Org/Policies:v1", "policies.bundle.url"},
		{"no tag", "url: oci://registry.example.com/org/policies", "want a tag or digest"},
		{"bearer token", "url: oci://r.example.com/org/p:v1\n    bearer_token: {env: T}", "policies.bundle.bearer_token: only for an http(s) url"},
		{"credentials on https", "url: https://b.example.com/m.tar.gz\n    username: ci", "only for an oci:// url"},
		{"password reference", "url: oci://r.example.com/org/p:v1\n    password: {}", "policies.bundle.password"},
	}
	for _, tt := range tests {
		_, err := loadConfig(writeConfig(t, "policies:\n  bundle:\n    "+tt.yaml+"\n"), noEnv)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error naming %q", tt.name, err, tt.want)
		}
	}
}
