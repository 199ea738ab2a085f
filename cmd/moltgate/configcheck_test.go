package main

import (
	"errors"
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
