package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue 16: a broken configuration file is reported whole in one run. Decoding no longer
// stops the checks: an unknown key (with the closest valid one suggested), a value of the
// wrong type, an inline secret and a duplicated key are reported with every semantic
// problem (a bad CIDR, an out-of-range limit, a missing required key) of the same file, in
// the file's order, and every line starts with the key it is about.
func TestConfigReportsEveryProblemAtOnce(t *testing.T) {
	tests := []struct {
		name, text string
		env        map[string]string
		want       []string // each problem line, in order: its start (the key) and what it must say
	}{
		{"a typo does not hide a bad CIDR", `
admin_listn: 127.0.0.1:9091
trusted_proxies: [10.0.0.0/33]
`, nil, []string{
			`admin_listn: unknown key; did you mean "admin_listen"? (line 2)`,
			`trusted_proxies[0]: "10.0.0.0/33": not an IP address or CIDR (line 3)`,
		}},
		{"five problems, five lines", `
listen: nonsense
limits:
  max_tool_body_bytes: lots
admin_token: hunter2-inline-secret
clerk:
  isuer: https://clerk.example.com
  secret_key: {file: /run/secrets/clerk}
  authorized_parties: [https://dashboard.example.com]
log: {level: loud}
`, nil, []string{
			`listen: "nonsense": want IP:port (line 2)`,
			`limits.max_tool_body_bytes: "lots": want a whole number (line 4)`,
			`admin_token: a secret is given by reference, {file: PATH} or {env: NAME}`,
			`clerk.issuer: "": want the https issuer of session tokens`,
			`clerk.isuer: unknown key; did you mean "issuer"? (line 7)`,
			`log.level: "loud": want debug, info, warn or error (line 10)`,
		}},
		{"types, durations and sections", `
policies:
  timeout: 5
websocket:
  burst: -1
  messages_per_second: many
  allowed_origins: https://dashboard.example.com
upstream: fast
trusted_proxies: [10.0.0.5/24]
audit:
  durable: sometimes
  redis: {password: hunter2-inline-secret}
`, nil, []string{
			`policies.timeout: "5": want a duration with its unit, such as 250ms, 5s or 1m30s (line 3)`,
			`websocket.burst: -1: must not be negative (line 5)`,
			`websocket.messages_per_second: "many": want a number (line 6)`,
			`websocket.allowed_origins: "https://dashboard.example.com": want a list, such as [a, b] (line 7)`,
			`upstream: "fast": want a section of keys (dial_timeout, response_header_timeout, max_idle_conns_per_host) (line 8)`,
			`trusted_proxies[0]: "10.0.0.5/24" has host bits set: write 10.0.0.0/24 for the network, or 10.0.0.5/32 for the one address (line 9)`,
			`audit.durable: "sometimes": want true or false (line 11)`,
			`audit.redis.addr: required`,
			`audit.redis.password: a secret is given by reference`,
		}},
		{"duplicates, nested unknown keys, keystore and admin sections", `
listen: 127.0.0.1:1
listen: 127.0.0.1:2
admin:
  rate_limit:
    writes_per_minute: 5
    burst: -5
keystore:
  source: vault
  vault: {address: ftp://vault, token: {file: /t, env: T}}
`, nil, []string{
			`listen: given twice (first at line 2) (line 3)`,
			`admin.rate_limit.writes_per_minute: unknown key; the keys here are tenant_writes_per_minute, caller_writes_per_minute, burst, admin_token_writes_per_minute, admin_token_burst (line 6)`,
			`admin.rate_limit.burst: -5: want 1 to 1000000 (0 for the default) (line 7)`,
			`keystore.vault.address: "ftp://vault": want an http(s) URL`,
			`keystore.vault.token: give exactly one of file or env`,
			`keystore.vault.transit_key: required`,
		}},
		{"a problem from the environment names its variable", "log: {format: text}\nlistn: x\n",
			map[string]string{"MOLTGATE_LISTEN": "nope"}, []string{
				`listn: unknown key; did you mean "listen"? (line 2)`,
				`listen: "nope": want IP:port (from MOLTGATE_LISTEN)`, // not in the file: after its problems
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(writeConfig(t, tt.text), func(k string) string { return tt.env[k] })
			var ce *configError
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a configError", err)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("an inline secret is repeated: %v", err)
			}
			if len(ce.problems) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(ce.problems), len(tt.want), err)
			}
			for i, p := range ce.problems {
				line := p.Error()
				key, _, _ := strings.Cut(tt.want[i], ": ")
				if p.key != key || !strings.HasPrefix(line, key+": ") {
					t.Errorf("problem %d: got %q, want it to start with its key %q", i, line, key)
				}
				if !strings.HasPrefix(line, tt.want[i]) {
					t.Errorf("problem %d: got %q, want %q", i, line, tt.want[i])
				}
				if !strings.Contains(err.Error(), "\n  "+line) {
					t.Errorf("problem %d is not on its own line of the error:\n%v", i, err)
				}
			}
		})
	}
}

// Issue 16: config check said ok for a {file: …} that did not exist and an {env: …} that was
// unset, and serve then failed after audit had started. It resolves every reference as
// serve will: a file must exist, be readable, give no one but its owner access, and hold a
// value of the right form; a variable must be set. Every problem is named by its key, in one
// run, and no value is ever printed.
func TestConfigCheckResolvesEverySecret(t *testing.T) {
	dir := t.TempDir()
	const value = "S3CRET-VALUE-0123456789abcdef0123456789abcdef"
	file := func(name string, mode os.FileMode, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Unreadable: a file its owner may not read; root reads any file, so for root a
	// directory stands in.
	unreadable, unreadableWhy := file("unreadable", 0o200, value), "cannot be read: permission denied"
	if os.Geteuid() == 0 {
		unreadable, unreadableWhy = filepath.Join(dir, "a-directory"), "cannot be read: is a directory"
		os.Mkdir(unreadable, 0o700)
	}
	tests := []struct {
		key, ref string
		env      map[string]string
		want     string // "" resolves
	}{
		{"admin_token", "{file: " + file("token", 0o600, value+"\n") + "}", nil, ""},
		{"admin_token", "{file: " + filepath.Join(dir, "missing") + "}", nil, "does not exist"},
		{"admin_token", "{file: " + unreadable + "}", nil, unreadableWhy},
		{"admin_token", "{file: " + file("world", 0o644, value) + "}", nil, "mode 0644 gives its group and others access: want 0600 (chmod 600 "},
		{"admin_token", "{file: " + file("group", 0o640, value) + "}", nil, "mode 0640 gives its group access"},
		{"admin_token", "{file: " + file("empty", 0o600, "\n\n") + "}", nil, "empty"},
		{"admin_token", "{file: " + file("short", 0o600, "short") + "}", nil, "shorter than 32 characters"},
		{"admin_token", "{env: MG_TOKEN}", map[string]string{"MG_TOKEN": value}, ""},
		{"admin_token", "{env: MG_UNSET}", nil, "env MG_UNSET: not set"},
		{"master_key", "{file: " + file("master", 0o600, value) + "}", nil, "want 32 bytes as hex or base64"},
		{"master_key", "{env: MG_MASTER}", map[string]string{"MG_MASTER": strings.Repeat("ab", 32)}, ""},
		{"clerk.secret_key", "{env: MG_CLERK}", nil, "env MG_CLERK: not set"},
		{"audit.redis.password", "{file: " + file("redis", 0o604, value) + "}", nil, "mode 0604 gives others access"},
		{"keystore.vault.token", "{file: " + filepath.Join(dir, "vault-token") + "}", nil, "does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.key+" "+tt.ref, func(t *testing.T) {
			var text string
			switch tt.key {
			case "clerk.secret_key":
				text = "clerk:\n  issuer: https://clerk.example.com\n  authorized_parties: [https://d.example.com]\n  secret_key: " + tt.ref + "\n"
			case "audit.redis.password":
				text = "audit:\n  redis: {addr: 127.0.0.1:6379, password: " + tt.ref + "}\n"
			case "keystore.vault.token":
				text = "keystore:\n  source: vault\n  vault: {address: https://vault.example.com, transit_key: k, token: " + tt.ref + "}\n"
			default:
				text = tt.key + ": " + tt.ref + "\n"
			}
			var out, errOut strings.Builder
			err := run(t.Context(), []string{"config", "check", writeConfig(t, text)}, func(k string) string { return tt.env[k] }, &out, &errOut)
			if tt.want == "" {
				if err != nil || !strings.Contains(out.String(), "ok (1 secret references resolved") {
					t.Fatalf("got %v, %q; want ok", err, out.String())
				}
				return
			}
			if err == nil || exitCode(err) != 1 {
				t.Fatalf("got %v (exit %d), want a failure (exit 1)", err, exitCode(err))
			}
			if !strings.Contains(err.Error(), tt.key+": ") || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %q, want it to name %s and say %q", err, tt.key, tt.want)
			}
			if strings.Contains(err.Error()+out.String()+errOut.String(), "S3CRET") {
				t.Fatalf("a secret value is shown: %v", err)
			}
		})
	}

	// All of a file's secret problems in one run, each by its key.
	text := "admin_token: {file: " + filepath.Join(dir, "missing") + "}\nmaster_key: {env: MG_UNSET}\n" +
		"audit:\n  redis: {addr: 127.0.0.1:6379, password: {file: " + file("redis2", 0o644, value) + "}}\n"
	_, err := loadConfig(writeConfig(t, text), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	err = run(t.Context(), []string{"config", "check", writeConfig(t, text)}, noEnv, io.Discard, io.Discard)
	for _, key := range []string{"admin_token: file", "master_key: env MG_UNSET", "audit.redis.password: file"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("got %v, want it to name %q", err, key)
		}
	}
}

// serve checks the secrets the same way before it opens anything: a missing secret stops
// the start with nothing created, not after the store and audit have begun.
func TestServeChecksSecretsBeforeStarting(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	cfg := writeConfig(t, "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:1\ndata_dir: "+data+"\nadmin_token: {env: MG_UNSET}\n")
	var errOut strings.Builder
	err := run(t.Context(), []string{"serve", "--config", cfg}, noEnv, io.Discard, &errOut)
	if err == nil || !strings.Contains(err.Error(), "admin_token: env MG_UNSET: not set") {
		t.Fatalf("got %v, want admin_token: env MG_UNSET: not set", err)
	}
	if _, statErr := os.Stat(data); !errors.Is(statErr, os.ErrNotExist) {
		t.Fatalf("data dir: %v; want nothing created before the secrets were checked", statErr)
	}
}
