package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moltgate/moltgate/policies"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "moltgate.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func noEnv(string) string { return "" }

func TestConfigDefaults(t *testing.T) {
	cfg, err := loadConfig("", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:8080" || cfg.AdminListen != "127.0.0.1:9090" || cfg.DataDir != "./data" ||
		cfg.GatewayDomain != "gw.localhost" || cfg.MasterKey != nil || cfg.Clerk != nil ||
		cfg.Policies.Timeout != policies.DefaultTimeout || cfg.Log.Format != "json" {
		t.Fatalf("defaults: %+v", cfg)
	}
	// Issue 15: admin writes are rate-limited by default, generously for a person.
	if rl := cfg.Admin.RateLimit; rl != (AdminRateLimitConfig{TenantWritesPerMinute: 120, CallerWritesPerMinute: 120, Burst: 30,
		AdminTokenWritesPerMinute: 1200, AdminTokenBurst: 300}) {
		t.Fatalf("admin.rate_limit defaults: got %+v", rl)
	}
	// Issue 11: failed authentications are limited per client address by default.
	if a := cfg.Proxy.AuthFailures; a != (AuthFailuresConfig{Limit: 30, Window: 5 * time.Minute}) {
		t.Fatalf("proxy.auth_failures defaults: got %+v", a)
	}
	// An empty file is the defaults too.
	if _, err := loadConfig(writeConfig(t, ""), noEnv); err != nil {
		t.Fatal(err)
	}
	cfg, err = loadConfig(writeConfig(t, "admin:\n  rate_limit: {tenant_writes_per_minute: 10, burst: 2}\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if rl := cfg.Admin.RateLimit; rl.TenantWritesPerMinute != 10 || rl.Burst != 2 || rl.CallerWritesPerMinute != 120 {
		t.Fatalf("admin.rate_limit set in part: got %+v, want 10, burst 2, and the default for the rest", rl)
	}
}

// TestConfigStoreRedis: the redis backend by address or through sentinels, and the
// staleness bound (issue 11).
func TestConfigStoreRedis(t *testing.T) {
	cfg, err := loadConfig("", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Store.Backend != "bolt" || cfg.Cluster.MaxStaleness != 5*time.Second || cfg.Cluster.LeaseTTL != 30*time.Second {
		t.Fatalf("defaults: got backend %q, max_staleness %v, lease_ttl %v; want bolt, 5s, 30s", cfg.Store.Backend,
			cfg.Cluster.MaxStaleness, cfg.Cluster.LeaseTTL)
	}
	cfg, err = loadConfig(writeConfig(t, `
store:
  backend: redis
  redis:
    sentinel: {master_name: mymaster, addresses: ["10.0.0.1:26379", "[::1]:26379"], password: {env: SENTINEL_PW}}
    username: moltgate
    password: {file: /run/secrets/redis}
    tls: {server_name: redis.internal}
    db: 2
cluster: {max_staleness: 2s, lease_ttl: 3s}
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Store.Redis
	if r.Sentinel.MasterName != "mymaster" || len(r.Sentinel.Addresses) != 2 || r.Password.File != "/run/secrets/redis" ||
		r.TLS.ServerName != "redis.internal" || r.DB != 2 || cfg.Cluster.MaxStaleness != 2*time.Second ||
		cfg.Cluster.LeaseTTL != 3*time.Second {
		t.Fatalf("got %+v, sentinel %+v, max_staleness %v, lease_ttl %v", r, r.Sentinel, cfg.Cluster.MaxStaleness, cfg.Cluster.LeaseTTL)
	}
	var keys []string
	for _, s := range cfg.secretRefs() {
		keys = append(keys, s.key)
	}
	if got := strings.Join(keys, ","); !strings.Contains(got, "store.redis.password") || !strings.Contains(got, "store.redis.sentinel.password") {
		t.Errorf("secret references: got %s, want both store.redis passwords", got)
	}
}

func TestConfigEnvOverrides(t *testing.T) {
	env := map[string]string{
		"MOLTGATE_LISTEN":                   "127.0.0.1:18080",
		"MOLTGATE_TRUSTED_PROXIES":          "10.0.0.0/8, 192.0.2.1",
		"MOLTGATE_CLERK_ISSUER":             "https://clerk.example.com",
		"MOLTGATE_CLERK_AUTHORIZED_PARTIES": "https://app.example.com",
		"MOLTGATE_CLERK_SECRET_KEY_FILE":    "/run/secrets/clerk",
	}
	cfg, err := loadConfig(writeConfig(t, "listen: 127.0.0.1:1\n"), func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:18080" || len(cfg.TrustedProxies) != 2 || cfg.Clerk.SecretKey.File != "/run/secrets/clerk" ||
		cfg.Clerk.APIURL != "https://api.clerk.com/v1" {
		t.Fatalf("overrides: %+v %+v", cfg, cfg.Clerk)
	}

	// An address from the environment replaces the file's, and keeps its password and db.
	env = map[string]string{"MOLTGATE_AUDIT_REDIS_ADDR": "10.0.0.7:6379", "MOLTGATE_AUDIT_REPLICA": "r7"}
	cfg, err = loadConfig(writeConfig(t, "audit:\n  redis: {addr: 127.0.0.1:1, password: {env: AUDIT_PW}, db: 3}\n"), func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.Audit.Redis; r.Addr != "10.0.0.7:6379" || r.DB != 3 || r.Password == nil || r.Password.Env != "AUDIT_PW" || cfg.Audit.Replica != "r7" {
		t.Fatalf("audit overrides: %+v (replica %q)", r, cfg.Audit.Replica)
	}
	// With no audit.redis in the file, the variable alone turns the stream on.
	cfg, err = loadConfig(writeConfig(t, "listen: 127.0.0.1:1\n"), func(k string) string { return env[k] })
	if err != nil || cfg.Audit.Redis == nil || cfg.Audit.Redis.Addr != "10.0.0.7:6379" {
		t.Fatalf("audit address alone: %v %+v", err, cfg.Audit.Redis)
	}
	// With a sentinel in the file, an address too is a conflict, named by its variable.
	_, err = loadConfig(writeConfig(t, "audit:\n  redis: {sentinel: {master_name: m, addresses: [\"127.0.0.1:26379\"]}}\n"), func(k string) string { return env[k] })
	if err == nil || !strings.Contains(err.Error(), "audit.redis: give either addr or sentinel") {
		t.Fatalf("addr over a sentinel: %v", err)
	}
}

func TestConfigRejects(t *testing.T) {
	tests := []struct {
		name, text string
		want       []string // every one must be named in the one error
		notWant    string
	}{
		{"unknown keys, all of them", "listen: 127.0.0.1:1\nlisen: x\nclerk:\n  isuer: y\n", []string{"lisen", "isuer"}, ""},
		{"duplicate key", "listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n", []string{"listen: given twice (first at line 1) (line 2)"}, ""},
		{"inline secret is refused without echoing it", "admin_token: hunter2-inline-secret\n", []string{"by reference"}, "hunter2"},
		{"inline clerk secret", "clerk:\n  secret_key: sk_live_abcdef\n", []string{"by reference"}, "sk_live_abcdef"},
		{"every semantic problem at once", `
listen: nonsense
admin_listen: nonsense
gateway_domain: "Bad_Domain"
trusted_proxies: [10.0.0.0/33, ok]
log: {level: loud, format: xml}
websocket: {identify_timeout: -1s}
master_key: {file: a, env: B}
clerk:
  api_url: ftp://x
  issuer: http://clerk.example.com
`, []string{"listen:", "admin_listen:", "gateway_domain:", "trusted_proxies[0]", "trusted_proxies[1]", "log.level",
			"log.format", "websocket.identify_timeout: -1s: must not be negative", "master_key:", "clerk.api_url", "clerk.issuer", "clerk.authorized_parties", "clerk.secret_key"}, ""},
		{"admin rate limits out of range", `
admin:
  rate_limit:
    tenant_writes_per_minute: -1
    caller_writes_per_minute: 2000000
    burst: -5
    admin_token_writes_per_minute: -1
    admin_token_burst: 1000001
`, []string{"admin.rate_limit.tenant_writes_per_minute: -1", "admin.rate_limit.caller_writes_per_minute: 2000000",
			"admin.rate_limit.burst: -5", "admin.rate_limit.admin_token_writes_per_minute", "admin.rate_limit.admin_token_burst"}, ""},
		{"admin rate limit unknown key", "admin:\n  rate_limit:\n    writes_per_minute: 5\n", []string{"writes_per_minute"}, ""},
		// Issue 11: the shared store's configuration, every problem named by its key.
		{"store backends", "store:\n  backend: etcd\ncluster: {max_staleness: -1s}\n",
			[]string{"store.backend: \"etcd\": want bolt or redis", "cluster.max_staleness: negative"}, ""},
		// Issue 13: the decision memo's bound.
		{"memo size negative", "policies:\n  memo: {size: -5}\n", []string{"policies.memo.size: -5"}, ""},
		{"lease ttl negative", "cluster: {lease_ttl: -1s}\n", []string{"cluster.lease_ttl: negative"}, ""},
		{"lease ttl too short", "cluster: {lease_ttl: 100ms}\n", []string{"cluster.lease_ttl: 100ms: want at least 1s"}, ""},
		{"redis without backend redis", "store:\n  redis: {address: 127.0.0.1:6379}\n", []string{"store.redis: given with backend bolt"}, ""},
		{"backend redis without redis", "store:\n  backend: redis\n", []string{"store.redis: required with backend redis"}, ""},
		{"redis address and sentinel", "store:\n  backend: redis\n  redis:\n    address: r:6379\n    sentinel: {master_name: m, addresses: [s:26379]}\n",
			[]string{"store.redis: give either address or sentinel"}, ""},
		{"redis fields", "store:\n  backend: redis\n  redis:\n    address: nohost\n    db: 16\n    password: s3cret-inline\n",
			[]string{"store.redis.address: \"nohost\": want host:port", "store.redis.db: 16", "by reference"}, "s3cret-inline"},
		{"sentinel fields", "store:\n  backend: redis\n  redis:\n    sentinel: {addresses: [x], password: {file: a, env: B}, replicas: -2}\n",
			[]string{"store.redis.sentinel.master_name: required", "store.redis.sentinel.addresses[0]", "store.redis.sentinel.password", "store.redis.sentinel.replicas: -2"}, ""},
		{"audit redis address and sentinel", "audit:\n  redis: {addr: r:6379, sentinel: {master_name: m, addresses: [s:26379]}}\n",
			[]string{"audit.redis: give either addr or sentinel"}, ""},
		{"audit redis sentinel fields", "audit:\n  redis:\n    sentinel: {addresses: [x], password: {file: a, env: B}, replicas: 1}\n",
			[]string{"audit.redis.sentinel.master_name: required", "audit.redis.sentinel.addresses[0]", "audit.redis.sentinel.password",
				"audit.redis.sentinel.replicas: 1: not used"}, ""},
		{"audit redis empty", "audit:\n  redis: {db: 1}\n", []string{"audit.redis.addr: required"}, ""},
		{"auth failure limit", "proxy:\n  auth_failures: {limit: -2, window: 10ms}\n",
			[]string{"proxy.auth_failures.limit: -2", "proxy.auth_failures.window: 10ms"}, ""},
		// An entry that is not exactly an origin would never match a browser's Origin.
		{"dashboard origins that are not origins", "websocket:\n  allowed_origins: [https://ok.example, https://app.example/path, 'null', https://u@app.example, app.example]\n",
			[]string{"allowed_origins[1]", "allowed_origins[2]", "allowed_origins[3]", "allowed_origins[4]"}, "allowed_origins[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(writeConfig(t, tt.text), noEnv)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not name %q:\n%v", w, err)
				}
			}
			if tt.notWant != "" && strings.Contains(err.Error(), tt.notWant) {
				t.Errorf("error repeats the secret: %v", err)
			}
		})
	}
}

func TestSecretRefResolve(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "s")
	os.WriteFile(f, []byte("  value-from-file \nsecond line\n"), 0o600)
	if v, err := (&SecretRef{File: f}).resolve(noEnv); err != nil || string(v) != "value-from-file" {
		t.Fatalf("file: %q %v", v, err)
	}
	env := func(k string) string { return map[string]string{"S": "from-env"}[k] }
	if v, err := (&SecretRef{Env: "S"}).resolve(env); err != nil || string(v) != "from-env" {
		t.Fatalf("env: %q %v", v, err)
	}
	if _, err := (&SecretRef{Env: "MISSING"}).resolve(env); err == nil {
		t.Fatal("unset env accepted")
	}
	os.WriteFile(f, []byte("\n"), 0o600)
	if _, err := (&SecretRef{File: f}).resolve(noEnv); err == nil {
		t.Fatal("empty file accepted")
	}
}

func TestRunCommandLine(t *testing.T) {
	var out, errOut strings.Builder
	good := writeConfig(t, "listen: 127.0.0.1:18080\n")
	if err := run(t.Context(), []string{"config", "check", good}, noEnv, &out, &errOut); err != nil || !strings.Contains(out.String(), "ok") {
		t.Fatalf("config check: %v %q", err, out.String())
	}
	bad := writeConfig(t, "listen: nope\n")
	if err := run(t.Context(), []string{"config", "check", bad}, noEnv, &out, &errOut); err == nil || exitCode(err) != 1 {
		t.Fatalf("config check of a bad file: %v", err)
	}
	for _, args := range [][]string{nil, {"frobnicate"}, {"config"}, {"gateway"}, {"serve", "--nope"}} {
		if err := run(t.Context(), args, noEnv, &out, &errOut); exitCode(err) != 2 {
			t.Errorf("%v: got %v (exit %d), want a usage error", args, err, exitCode(err))
		}
	}
	// -h and --help print the flags and exit 0, for every command that takes flags.
	for _, args := range [][]string{{"serve", "-h"}, {"gateway", "--help"}, {"keys", "list", "-h"}, {"audit", "verify", "--help"}} {
		errOut.Reset()
		if err := run(t.Context(), args, noEnv, &out, &errOut); exitCode(err) != 0 || !strings.Contains(errOut.String(), "Usage of") {
			t.Errorf("%v: got %v (exit %d), stderr %q; want the flags and exit 0", args, err, exitCode(err), errOut.String())
		}
	}
	out.Reset()
	if err := run(t.Context(), []string{"policy", "test"}, noEnv, &out, &errOut); err != nil || !strings.Contains(out.String(), " passed, 0 failed") {
		t.Fatalf("policy test: %v %q", err, out.String())
	}
}

// The example in deploy/ is what operators copy: it must stay valid and mean what it says.
func TestDeployExampleConfig(t *testing.T) {
	cfg, err := loadConfig(filepath.Join("..", "..", "deploy", "moltgate.yaml"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Keystore.Source != "vault" || cfg.Audit.Redis == nil || cfg.Clerk == nil ||
		cfg.GatewayDomain != "gw.example.com" || cfg.Audit.Archive.Retention != 61362*time.Hour {
		t.Fatalf("deploy/moltgate.yaml decoded as %+v", cfg)
	}
}

// TestConfigMemoSize (issue 13): policies.memo.size unset is the engine's default, 0 turns the
// memo off, any other number bounds it.
func TestConfigMemoSize(t *testing.T) {
	for _, tt := range []struct {
		text string
		want int
	}{
		{"listen: 127.0.0.1:1\n", 0},
		{"policies: {memo: {size: 0}}\n", -1},
		{"policies: {memo: {size: 5000}}\n", 5000},
	} {
		cfg, err := loadConfig(writeConfig(t, tt.text), noEnv)
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Policies.Memo.engineSize(); got != tt.want {
			t.Errorf("%q: got %d, want %d", tt.text, got, tt.want)
		}
	}
}
