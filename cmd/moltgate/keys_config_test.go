package main

import (
	"bytes"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/keystore/vaulttest"
	"github.com/moltgate/moltgate/store"
)

func TestKeystoreConfigRejects(t *testing.T) {
	for _, tt := range []struct{ text, want string }{
		{"keystore: {source: disk}", `keystore.source: "disk": want file, env or vault`},
		{"keystore: {source: file}", "keystore.file: required"},
		{"keystore: {source: env}", "keystore.env: required"},
		{"keystore: {source: vault}", "keystore.vault: required"},
		{"keystore: {source: vault, vault: {address: vault:8200}}", "keystore.vault.address"},
		{"keystore: {source: vault, vault: {address: 'https://v:8200'}}", "keystore.vault.token: required"},
		{"keystore: {source: vault, vault: {address: 'https://v:8200', token: {env: T}}}", "keystore.vault.transit_key: required"},
		{"keystore: {source: vault, vault: {address: 'https://v:8200', token: s.inline, transit_key: k}}", "by reference"},
		{"keystore: {source: file, file: k}\nmaster_key: {file: m}", "either master_key or keystore.source"},
		{"keystore: {verify_urls: {openai: 'api.openai.com'}}", "keystore.verify_urls.openai"},
	} {
		_, err := loadConfig(writeConfig(t, tt.text), noEnv)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error with %q", tt.text, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "s.inline") {
			t.Errorf("the error repeats an inline token: %v", err)
		}
	}
}

// TestMasterSources loads the master keys from each configured source: a keyring file, an
// environment variable, Vault transit (the fake), the single master_key, and the development
// key, which becomes a keyring file that rotation can extend.
func TestMasterSources(t *testing.T) {
	dir := t.TempDir()
	kv, err := store.OpenBolt(filepath.Join(dir, "kv.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	b1, b2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	k1, k2 := hex.EncodeToString(b1), hex.EncodeToString(b2)
	keyring := filepath.Join(dir, "keyring")
	if err := os.WriteFile(keyring, []byte("1:"+k1+"\n2:"+k2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(dir, "vault.token")
	if err := os.WriteFile(tokFile, []byte("s.test-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fake := vaulttest.New(t, "s.test-token")
	fake.CreateKey("moltgate-master")
	env := map[string]string{"MG_KEYRING": "1:" + k1 + ",2:" + k2, "MG_MASTER": k1}
	logger := slog.New(slog.DiscardHandler)

	both := map[uint32]keystore.Secret{1: b1, 2: b2}
	for _, tt := range []struct {
		name     string
		cfg      Config
		versions int
		rotates  bool
		keys     map[uint32]keystore.Secret // the bytes the source must have loaded (nil: generated)
	}{
		{"file", Config{Keystore: KeystoreConfig{Source: "file", File: keyring}}, 2, true, both},
		{"env", Config{Keystore: KeystoreConfig{Source: "env", Env: "MG_KEYRING"}}, 2, false, both},
		{"vault", Config{Keystore: KeystoreConfig{Source: "vault", Vault: &VaultConfig{Address: fake.URL,
			Token: &SecretRef{File: tokFile}, Key: "moltgate-master"}}}, 1, true, nil},
		{"master_key", Config{MasterKey: &SecretRef{Env: "MG_MASTER"}}, 1, false, map[uint32]keystore.Secret{1: b1}},
		{"development", Config{DataDir: filepath.Join(dir, "dev")}, 1, true, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src, err := masterSource(t.Context(), &tt.cfg, func(k string) string { return env[k] }, kv, logger, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			ks, err := openKeystore(t.Context(), src, kv)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(ks.Ring().Versions()); n != tt.versions {
				t.Fatalf("versions: got %d, want %d", n, tt.versions)
			}
			sealed, err := ks.Seal("org_a", "r", "p", []byte("value"))
			if err != nil {
				t.Fatal(err)
			}
			if tt.keys != nil {
				// What the source loaded is the configured key: a keystore built from the
				// bytes themselves opens what the loaded one sealed.
				ring, err := keystore.NewKeyringFrom(tt.keys)
				if err != nil {
					t.Fatal(err)
				}
				if got, err := keystore.NewWithSalts(ring, kv).Open("org_a", "r", "p", sealed); err != nil || string(got) != "value" {
					t.Fatalf("the configured key does not open what the loaded one sealed: %q, %v", got, err)
				}
			}
			if _, ok := src.(keystore.MasterKeyAdder); ok != tt.rotates {
				t.Fatalf("can add versions: got %v, want %v", ok, tt.rotates)
			}
			if !tt.rotates {
				return
			}
			// A version added by rotation is there at the next start, and old ciphertexts open.
			v, key, err := src.(keystore.MasterKeyAdder).AddVersion(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			clear(key)
			again, err := openKeystore(t.Context(), src, kv)
			if err != nil || again.Ring().Current() != v {
				t.Fatalf("after adding version %d: current %d, %v", v, again.Ring().Current(), err)
			}
			if got, err := again.Open("org_a", "r", "p", sealed); err != nil || string(got) != "value" {
				t.Fatalf("open after restart: %v", err)
			}
		})
	}
	// A source that is configured but absent is a clear error.
	cfg := Config{Keystore: KeystoreConfig{Source: "env", Env: "MG_NOTSET"}}
	if _, err := masterSource(t.Context(), &cfg, func(string) string { return "" }, kv, logger, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "MG_NOTSET is not set") {
		t.Fatalf("unset env: %v", err)
	}
}
