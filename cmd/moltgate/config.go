package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/proxy/wsrelay"
	"github.com/moltgate/moltgate/registry"
	"github.com/moltgate/moltgate/store"
)

// Config is the moltgate serve configuration. Every zero value means the documented default,
// so an empty file (or none) runs on the embedded defaults.
type Config struct {
	// Listen is the proxy's address. Default 127.0.0.1:8080.
	Listen string `yaml:"listen"`
	// AdminListen serves /metrics, /healthz, /readyz and the admin API. Default 127.0.0.1:9090.
	AdminListen string `yaml:"admin_listen"`
	// DataDir holds the bbolt store, audit files and development keys. Default ./data.
	DataDir string `yaml:"data_dir"`
	// GatewayDomain routes <id>.<gateway_domain> to gateway id. Default gw.localhost.
	GatewayDomain string `yaml:"gateway_domain"`
	// TrustedProxies are CIDRs whose CF-Connecting-IP / X-Forwarded-For are believed. Default none.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// MasterKey is the keystore master key (32 bytes, hex or base64). Default: a development key
	// generated in <data_dir>/master.key, with a warning at every start.
	MasterKey *SecretRef `yaml:"master_key"`
	// Keystore selects the master key source (file, env or Vault transit) and provider key checks.
	Keystore KeystoreConfig `yaml:"keystore"`
	// AdminToken authenticates operators on the admin API. Default: a development token
	// generated in <data_dir>/admin.token.
	AdminToken *SecretRef `yaml:"admin_token"`
	// PlatformAdmins are Clerk user ids allowed the whole admin API. Default none.
	PlatformAdmins []string `yaml:"platform_admins"`
	// Admin configures the admin API (rate limits of its writes).
	Admin AdminConfig `yaml:"admin"`
	// Proxy configures the proxy listener's own defences (proxy_config.go).
	Proxy ProxyConfig `yaml:"proxy"`
	// Clerk verifies dashboard sessions. Default: off (only gateway tokens are accepted).
	Clerk *ClerkConfig `yaml:"clerk"`
	// Policies selects the Rego policy set.
	Policies PoliciesConfig `yaml:"policies"`
	// Limits bound what a client can make moltgate hold.
	Limits LimitsConfig `yaml:"limits"`
	// Upstream tunes connections to gateways.
	Upstream UpstreamConfig `yaml:"upstream"`
	// WebSocket bounds relayed sockets.
	WebSocket WebSocketConfig `yaml:"websocket"`
	// Audit configures the audit spool, sinks and archive.
	Audit AuditConfig `yaml:"audit"`
	// Browser configures how people in a browser sign in to a gateway's host.
	Browser BrowserConfig `yaml:"browser"`
	// Store configures the key-value store beneath the registry and keystore.
	Store StoreConfig `yaml:"store"`
	// Cluster configures how replicas sharing a Redis store keep their views fresh.
	Cluster ClusterConfig `yaml:"cluster"`
	// Provisioner configures gateways made on demand (provision.go).
	Provisioner ProvisionerConfig `yaml:"provisioner"`
	// Log configures logging.
	Log LogConfig `yaml:"log"`
	// ShutdownTimeout bounds the whole shutdown at SIGTERM: draining connections, flushing
	// audit, closing the store. When it passes the process exits anyway. Default 15s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// BrowserConfig configures browser sign-in and moltgate's browser sessions.
type BrowserConfig struct {
	// SignInURL is where a page navigation without identity is sent (the platform dashboard),
	// with ?gateway=ID&return_path=/P. Default none: such navigations get 401.
	SignInURL string `yaml:"sign_in_url"`
	// GatewayURL is a gateway's public base URL with {id} for its id, the base of launch
	// links. Default http://{id}.<gateway_domain>:<listen port> when gateway_domain is a
	// *.localhost name, else https://{id}.<gateway_domain>.
	GatewayURL string `yaml:"gateway_url"`
	// IdleTimeout ends a session unused for this long. Default 30m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// Lifetime ends a session this long after sign-in. Default 12h.
	Lifetime time.Duration `yaml:"lifetime"`
	// SessionCheckInterval is how often each session's Clerk session is checked. Default 60s.
	SessionCheckInterval time.Duration `yaml:"session_check_interval"`
	// ClerkGrace is how long sessions go on while Clerk cannot be reached. Default 5m.
	ClerkGrace time.Duration `yaml:"clerk_grace"`
}

// StoreConfig configures the store.
type StoreConfig struct {
	// Backend is bolt (one bbolt file in data_dir, one process) or redis (shared by any
	// number of replicas). Default bolt.
	Backend string `yaml:"backend"`
	// Redis locates the Redis server of backend redis. Required with it, refused without.
	Redis *StoreRedisConfig `yaml:"redis"`
	// Timeout bounds one store operation; a request whose store call misses it fails (503)
	// and /readyz names the stuck operation until it ends. Default 5s.
	Timeout time.Duration `yaml:"timeout"`
}

// Store backends.
const (
	backendBolt  = "bolt"
	backendRedis = "redis"
)

// Leases of single-writer jobs on the shared store (cluster.lease_ttl).
const (
	defaultLeaseTTL = 30 * time.Second
	// minLeaseTTL leaves a renewal (every third of the lease) time for a store round trip
	// and a store.timeout-bounded retry before the lease lapses.
	minLeaseTTL = time.Second
)

// StoreRedisConfig locates the Redis server of the redis backend: address, or sentinel.
type StoreRedisConfig struct {
	// Address is host:port of the server. Give it or sentinel, not both.
	Address string `yaml:"address"`
	// Sentinel finds the master through Redis Sentinel and follows it across failovers.
	Sentinel *RedisSentinelConfig `yaml:"sentinel"`
	// Username is the ACL user. Default none.
	Username string `yaml:"username"`
	// Password is the ACL password, by reference. Default none.
	Password *SecretRef `yaml:"password"`
	// TLS, if present, makes every connection TLS. Default plain TCP.
	TLS *RedisTLSConfig `yaml:"tls"`
	// DB is the database number. Default 0.
	DB int `yaml:"db"`
}

// RedisSentinelConfig names a master and its sentinels.
type RedisSentinelConfig struct {
	// MasterName is the name the sentinels know the master by. Required.
	MasterName string `yaml:"master_name"`
	// Addresses are host:port of sentinels. At least one.
	Addresses []string `yaml:"addresses"`
	// Password authenticates to the sentinels, by reference. Default none.
	Password *SecretRef `yaml:"password"`
	// Replicas is how many replica Redis servers must have a write before it is acknowledged
	// (WAIT), so that a failover loses no acknowledged write. Default 1; -1: do not wait.
	Replicas int `yaml:"replicas"`
}

// RedisTLSConfig configures TLS to Redis.
type RedisTLSConfig struct {
	// CAFile holds the PEM certificates that may sign the server's. Default the system's.
	CAFile string `yaml:"ca_file"`
	// ServerName is checked against the server's certificate. Default the address's host.
	ServerName string `yaml:"server_name"`
}

// ClusterConfig configures replicas on a shared store (store.backend redis).
type ClusterConfig struct {
	// MaxStaleness is how long a replica goes on deciding after it last confirmed its view of
	// the shared store current; past it, it refuses (503 view_stale) and /readyz fails until
	// it confirms again. Default 5s.
	MaxStaleness time.Duration `yaml:"max_staleness"`
	// LeaseTTL is how long a lease on the shared store outlives its holder's last renewal,
	// renewed every third of it: a key rotation job's (a replica that dies mid-job leaves the
	// job to another after at most this long, and replicas look for such jobs this often) and
	// the replica name's (audit.replica). Default 30s.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
}

// SecretRef names where a secret is, never the secret: a file (first line used, white space
// trimmed) or an environment variable.
type SecretRef struct {
	File string `yaml:"file"`
	Env  string `yaml:"env"`
}

// ClerkConfig configures Clerk session verification.
type ClerkConfig struct {
	// APIURL is the Backend API base. Default https://api.clerk.com/v1.
	APIURL string `yaml:"api_url"`
	// SecretKey authenticates JWKS fetches.
	SecretKey *SecretRef `yaml:"secret_key"`
	// Issuer is the exact iss of session tokens, e.g. https://clerk.example.com. Required.
	Issuer string `yaml:"issuer"`
	// AuthorizedParties are the accepted azp values (dashboard origins). Required.
	AuthorizedParties []string `yaml:"authorized_parties"`
	// Leeway tolerates clock skew on exp and nbf. Default 5s.
	Leeway time.Duration `yaml:"leeway"`
}

// PoliciesConfig selects the policy set.
type PoliciesConfig struct {
	// Dir holds *.rego (and data) files to use instead of the embedded defaults.
	Dir string `yaml:"dir"`
	// Timeout bounds one decision; past it the request is refused. Default 250ms.
	Timeout time.Duration `yaml:"timeout"`
	// Watch reloads Dir when a file in it changes (fsnotify), as SIGHUP does. Default false.
	Watch bool `yaml:"watch"`
	// Bundle polls an OPA bundle server for the policy set instead of Dir. Default none.
	Bundle *PolicyBundleConfig `yaml:"bundle"`
	// DecisionLog samples allowed decisions into the audit stream (policy.decision).
	DecisionLog DecisionLogConfig `yaml:"decision_log"`
	// Memo bounds the exact decision memo.
	Memo PolicyMemoConfig `yaml:"memo"`
	// Shadow runs a candidate policy set beside the live one (shadow mode). Default: none.
	Shadow PolicyShadowConfig `yaml:"shadow"`
}

// PolicyShadowConfig configures shadow mode.
type PolicyShadowConfig struct {
	// Dir holds a candidate policy set, gated as Dir is: every decision is evaluated by it
	// too, never enforced; differences are counted and audited, and `moltgate policy promote`
	// makes it live. Empty: no candidate.
	Dir string `yaml:"dir"`
}

// PolicyMemoConfig bounds the exact decision memo (see policies.Engine).
type PolicyMemoConfig struct {
	// Size is the number of decisions held, least recently used evicted first; 0 turns the
	// memo off. Unset means policies.DefaultMemoSize (100000).
	Size *int `yaml:"size"`
}

// engineSize is Size as policies.Config.MemoSize reads it: 0 the default, negative off.
func (m PolicyMemoConfig) engineSize() int {
	switch {
	case m.Size == nil:
		return 0
	case *m.Size == 0:
		return -1
	}
	return *m.Size
}

// LimitsConfig bounds request handling.
type LimitsConfig struct {
	// MaxToolBodyBytes bounds the POST /tools/invoke body. Default 1048576.
	MaxToolBodyBytes int64 `yaml:"max_tool_body_bytes"`
}

// UpstreamConfig tunes the transport to gateways.
type UpstreamConfig struct {
	// DialTimeout default 5s.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// ResponseHeaderTimeout default 60s.
	ResponseHeaderTimeout time.Duration `yaml:"response_header_timeout"`
	// MaxIdleConnsPerHost default 256.
	MaxIdleConnsPerHost int `yaml:"max_idle_conns_per_host"`
}

// WebSocketConfig bounds relayed WebSockets.
type WebSocketConfig struct {
	// AllowedOrigins are the dashboard origins allowed to open sockets to any gateway, besides
	// each gateway's own public origin (its Control UI), which is always allowed on its own
	// sockets. Default: the Clerk authorized parties; without Clerk, none.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// MaxMessageBytes bounds one client message (larger closes with 1009). Default 1048576.
	MaxMessageBytes int64 `yaml:"max_message_bytes"`
	// MessagesPerSecond and Burst limit client messages per socket. Defaults 50 and 100.
	MessagesPerSecond float64 `yaml:"messages_per_second"`
	Burst             int     `yaml:"burst"`
	// MaxConnsPerSubject bounds open sockets per user or token. Default 32.
	MaxConnsPerSubject int `yaml:"max_conns_per_subject"`
	// IdleTimeout closes sockets with no traffic. Default 10m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// IdentifyTimeout closes (1008) a socket upgraded without a credential that has not
	// identified in its connect request, and been allowed, this long after the upgrade.
	// Default 10s.
	IdentifyTimeout time.Duration `yaml:"identify_timeout"`
	// WriteTimeout closes sockets whose client does not read. Default 10s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
}

// LogConfig configures logging.
type LogConfig struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format is json or text. Default json.
	Format string `yaml:"format"`
}

// loadConfig reads path (none: defaults), applies MOLTGATE_* overrides from env, fills
// defaults and validates. Every problem is reported at once, decoding and semantic ones
// together (configdecode.go), each naming its key, in the order of the file.
func loadConfig(path string, env func(string) string) (*Config, error) {
	cfg := &Config{}
	d := &configDecoder{lines: map[string]int{}, failed: map[string]bool{}}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		d = decodeConfig(data, cfg)
	}
	fromEnv := cfg.applyEnv(env)
	cfg.setDefaults()
	problems := d.problems
	for _, err := range unjoin(cfg.Validate()) {
		p := configProblem{msg: err.Error()}
		if key, msg, ok := strings.Cut(p.msg, ": "); ok {
			p.key, p.msg = key, msg
		}
		if d.failed[p.key] {
			continue // its value did not decode: reported as written, not as its default
		}
		base, _, _ := strings.Cut(p.key, "[")
		if name, ok := fromEnv[base]; ok {
			p.msg += " (from " + name + ")"
		} else {
			p.line = d.lines[p.key]
		}
		problems = append(problems, p)
	}
	if len(problems) > 0 {
		return nil, &configError{path: path, problems: d.inFileOrder(problems)}
	}
	return cfg, nil
}

// configError is every problem of one configuration.
type configError struct {
	path     string
	problems []configProblem
}

func (e *configError) Error() string {
	var b strings.Builder
	b.WriteString("config")
	if e.path != "" {
		b.WriteString(" " + e.path)
	}
	if len(e.problems) == 1 {
		return b.String() + ": " + e.problems[0].Error()
	}
	fmt.Fprintf(&b, ": %d problems:", len(e.problems))
	for _, p := range e.problems {
		b.WriteString("\n  " + p.Error())
	}
	return b.String()
}

// unjoin returns the errors errors.Join made err of (err alone if it is not a join).
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// inFileOrder sorts problems by where their key is in the file; a key the file does not
// have (a required one left out) sorts with its nearest section that it does have.
func (d *configDecoder) inFileOrder(problems []configProblem) []configProblem {
	at := func(p configProblem) int {
		if p.line > 0 {
			return p.line
		}
		for k := p.key; k != ""; {
			if l, ok := d.lines[k]; ok {
				return l
			}
			i := strings.LastIndexAny(k, ".[")
			if i < 0 {
				break
			}
			k = k[:i]
		}
		return 1 << 30
	}
	slices.SortStableFunc(problems, func(a, b configProblem) int {
		if c := at(a) - at(b); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	})
	return problems
}

// applyEnv applies the MOLTGATE_* overrides listed in the README, and returns the keys it
// set with the variable that set each.
func (c *Config) applyEnv(env func(string) string) map[string]string {
	list := func(v string) []string {
		var out []string
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				out = append(out, f)
			}
		}
		return out
	}
	clerk := func() *ClerkConfig {
		if c.Clerk == nil {
			c.Clerk = &ClerkConfig{}
		}
		return c.Clerk
	}
	// The file's audit.redis password and db stay with an address from the environment.
	auditRedis := func() *AuditRedisConfig {
		if c.Audit.Redis == nil {
			c.Audit.Redis = &AuditRedisConfig{}
		}
		return c.Audit.Redis
	}
	type override struct {
		key string
		set func(string)
	}
	set := map[string]override{
		"MOLTGATE_LISTEN":                   {"listen", func(v string) { c.Listen = v }},
		"MOLTGATE_ADMIN_LISTEN":             {"admin_listen", func(v string) { c.AdminListen = v }},
		"MOLTGATE_DATA_DIR":                 {"data_dir", func(v string) { c.DataDir = v }},
		"MOLTGATE_GATEWAY_DOMAIN":           {"gateway_domain", func(v string) { c.GatewayDomain = v }},
		"MOLTGATE_TRUSTED_PROXIES":          {"trusted_proxies", func(v string) { c.TrustedProxies = list(v) }},
		"MOLTGATE_PLATFORM_ADMINS":          {"platform_admins", func(v string) { c.PlatformAdmins = list(v) }},
		"MOLTGATE_MASTER_KEY_FILE":          {"master_key", func(v string) { c.MasterKey = &SecretRef{File: v} }},
		"MOLTGATE_ADMIN_TOKEN_FILE":         {"admin_token", func(v string) { c.AdminToken = &SecretRef{File: v} }},
		"MOLTGATE_POLICY_DIR":               {"policies.dir", func(v string) { c.Policies.Dir = v }},
		"MOLTGATE_POLICY_SHADOW_DIR":        {"policies.shadow.dir", func(v string) { c.Policies.Shadow.Dir = v }},
		"MOLTGATE_LOG_LEVEL":                {"log.level", func(v string) { c.Log.Level = v }},
		"MOLTGATE_AUDIT_REPLICA":            {"audit.replica", func(v string) { c.Audit.Replica = v }},
		"MOLTGATE_AUDIT_REDIS_ADDR":         {"audit.redis.addr", func(v string) { auditRedis().Addr = v }},
		"MOLTGATE_LOG_FORMAT":               {"log.format", func(v string) { c.Log.Format = v }},
		"MOLTGATE_CLERK_API_URL":            {"clerk.api_url", func(v string) { clerk().APIURL = v }},
		"MOLTGATE_CLERK_ISSUER":             {"clerk.issuer", func(v string) { clerk().Issuer = v }},
		"MOLTGATE_CLERK_AUTHORIZED_PARTIES": {"clerk.authorized_parties", func(v string) { clerk().AuthorizedParties = list(v) }},
		"MOLTGATE_CLERK_SECRET_KEY_FILE":    {"clerk.secret_key", func(v string) { clerk().SecretKey = &SecretRef{File: v} }},
	}
	keys := map[string]string{}
	for name, o := range set {
		if v := env(name); v != "" {
			o.set(v)
			keys[o.key] = name
		}
	}
	return keys
}

func (c *Config) setDefaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.Listen, "127.0.0.1:8080")
	def(&c.AdminListen, "127.0.0.1:9090")
	def(&c.DataDir, "./data")
	c.Audit.setDefaults(c.DataDir)
	c.Admin.setDefaults()
	c.Proxy.setDefaults()
	c.Provisioner.setDefaults(c.DataDir)
	def(&c.GatewayDomain, "gw.localhost")
	def(&c.Log.Level, "info")
	def(&c.Log.Format, "json")
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 15 * time.Second
	}
	if c.Store.Timeout == 0 {
		c.Store.Timeout = store.DefaultTimeout
	}
	def(&c.Store.Backend, backendBolt)
	if c.Cluster.MaxStaleness == 0 {
		c.Cluster.MaxStaleness = store.DefaultMaxStaleness
	}
	if c.Cluster.LeaseTTL == 0 {
		c.Cluster.LeaseTTL = defaultLeaseTTL
	}
	if c.Policies.Timeout == 0 {
		c.Policies.Timeout = policies.DefaultTimeout
	}
	if c.Clerk != nil && c.WebSocket.AllowedOrigins == nil {
		c.WebSocket.AllowedOrigins = c.Clerk.AuthorizedParties
	}
	if c.Clerk != nil {
		def(&c.Clerk.APIURL, "https://api.clerk.com/v1")
		if c.Clerk.Leeway == 0 {
			c.Clerk.Leeway = 5 * time.Second
		}
	}
}

// Validate reports every problem at once, each naming its key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{key}, args...)...))
	}
	for key, addr := range map[string]string{"listen": c.Listen, "admin_listen": c.AdminListen} {
		if _, err := netip.ParseAddrPort(addr); err != nil {
			bad(key, "%q: want IP:port", addr)
		}
	}
	if c.Listen == c.AdminListen {
		bad("admin_listen", "must differ from listen")
	}
	if gatewayDomainOK(c.GatewayDomain) != nil {
		bad("gateway_domain", "%q: want a DNS name", c.GatewayDomain)
	}
	for i, p := range c.TrustedProxies {
		// Host bits set ("10.0.0.5/24") would trust a whole network where one host may have
		// been meant: refused with both normal forms.
		if err := registry.CheckCIDR(p); err != nil {
			bad(fmt.Sprintf("trusted_proxies[%d]", i), "%v", err)
		}
	}
	errs = append(errs, c.Keystore.validate()...)
	if c.Keystore.Source != "" && c.MasterKey != nil {
		bad("master_key", "give either master_key or keystore.source, not both")
	}
	for key, ref := range map[string]*SecretRef{"master_key": c.MasterKey, "admin_token": c.AdminToken} {
		if ref != nil {
			if err := ref.validate(); err != nil {
				bad(key, "%v", err)
			}
		}
	}
	if k := c.Clerk; k != nil {
		if u, err := url.Parse(k.APIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("clerk.api_url", "want an http(s) URL")
		}
		if k.SecretKey == nil {
			bad("clerk.secret_key", "required")
		} else if err := k.SecretKey.validate(); err != nil {
			bad("clerk.secret_key", "%v", err)
		}
		if u, err := url.Parse(k.Issuer); err != nil || u.Scheme != "https" || u.Host == "" {
			bad("clerk.issuer", "%q: want the https issuer of session tokens", k.Issuer)
		}
		if len(k.AuthorizedParties) == 0 {
			bad("clerk.authorized_parties", "required: the dashboard origins allowed as azp")
		}
		if k.Leeway < 0 || k.Leeway > time.Minute {
			bad("clerk.leeway", "%v: want 0 to 1m", k.Leeway)
		}
	}
	if c.Policies.Watch && c.Policies.Dir == "" && c.Policies.Shadow.Dir == "" {
		bad("policies.watch", "needs policies.dir or policies.shadow.dir")
	}
	if c.Policies.Timeout < 0 {
		bad("policies.timeout", "negative")
	}
	errs = append(errs, c.Policies.validateBundle()...)
	if r := c.Policies.DecisionLog.AllowSampleRate; r != nil && !(*r >= 0 && *r <= 1) {
		bad("policies.decision_log.allow_sample_rate", "%v: want 0 to 1", *r)
	}
	if s := c.Policies.Memo.Size; s != nil && *s < 0 {
		bad("policies.memo.size", "%d: want 0 (off) or a number of decisions", *s)
	}
	if c.Limits.MaxToolBodyBytes < 0 {
		bad("limits.max_tool_body_bytes", "negative")
	}
	errs = append(errs, negative("upstream.dial_timeout", c.Upstream.DialTimeout),
		negative("upstream.response_header_timeout", c.Upstream.ResponseHeaderTimeout),
		negative("upstream.max_idle_conns_per_host", c.Upstream.MaxIdleConnsPerHost))
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q: want debug, info, warn or error", c.Log.Level)
	}
	if c.Log.Format != "json" && c.Log.Format != "text" {
		bad("log.format", "%q: want json or text", c.Log.Format)
	}
	w := c.WebSocket
	errs = append(errs, negative("websocket.max_message_bytes", w.MaxMessageBytes),
		negative("websocket.messages_per_second", w.MessagesPerSecond), negative("websocket.burst", w.Burst),
		negative("websocket.max_conns_per_subject", w.MaxConnsPerSubject),
		negative("websocket.idle_timeout", w.IdleTimeout), negative("websocket.write_timeout", w.WriteTimeout),
		negative("websocket.identify_timeout", w.IdentifyTimeout))
	for i, o := range c.WebSocket.AllowedOrigins {
		if wsrelay.CanonicalOrigin(o) == "" {
			bad(fmt.Sprintf("websocket.allowed_origins[%d]", i), "%q: want scheme://host[:port]", o)
		}
	}
	if c.Store.Timeout < 0 {
		bad("store.timeout", "negative")
	}
	errs = append(errs, c.Store.validate()...)
	if c.Cluster.MaxStaleness < 0 {
		bad("cluster.max_staleness", "negative")
	}
	if c.Cluster.LeaseTTL < 0 {
		bad("cluster.lease_ttl", "negative")
	} else if c.Cluster.LeaseTTL > 0 && c.Cluster.LeaseTTL < minLeaseTTL {
		bad("cluster.lease_ttl", "%s: want at least %s (renewals every third of it must reach Redis in time)", c.Cluster.LeaseTTL, minLeaseTTL)
	}
	for key, d := range map[string]time.Duration{"browser.idle_timeout": c.Browser.IdleTimeout, "browser.lifetime": c.Browser.Lifetime,
		"browser.session_check_interval": c.Browser.SessionCheckInterval, "browser.clerk_grace": c.Browser.ClerkGrace} {
		if d < 0 {
			bad(key, "negative")
		}
	}
	if u := c.Browser.SignInURL; u != "" {
		if p, err := url.Parse(u); err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
			bad("browser.sign_in_url", "want an absolute http(s) URL")
		}
	}
	if u := c.Browser.GatewayURL; u != "" {
		if p, err := url.Parse(strings.ReplaceAll(u, "{id}", "x")); err != nil || !strings.Contains(u, "{id}") ||
			(p.Scheme != "https" && p.Scheme != "http") || p.Path != "" {
			bad("browser.gateway_url", "want scheme://host[:port] with {id} in the host, no path")
		}
	}
	if c.ShutdownTimeout < 0 {
		bad("shutdown_timeout", "negative")
	}
	errs = append(errs, c.Audit.validate()...)
	errs = append(errs, c.Admin.validate()...)
	errs = append(errs, c.Proxy.validate()...)
	errs = append(errs, c.Provisioner.validate()...)
	return errors.Join(errs...)
}

// validate reports the problems of the store's backend and its Redis, each naming its key.
func (s *StoreConfig) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("store.%s: "+format, append([]any{key}, args...)...))
	}
	switch s.Backend {
	case backendBolt:
		if s.Redis != nil {
			bad("redis", "given with backend bolt: set backend: redis to use it")
		}
		return errs
	case backendRedis:
	default:
		bad("backend", "%q: want bolt or redis", s.Backend)
		return errs
	}
	r := s.Redis
	if r == nil {
		bad("redis", "required with backend redis: address or sentinel")
		return errs
	}
	hostPort := func(key, addr string) {
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			bad(key, "%q: want host:port", addr)
		}
	}
	switch {
	case r.Address != "" && r.Sentinel != nil:
		bad("redis", "give either address or sentinel, not both")
	case r.Address != "":
		hostPort("redis.address", r.Address)
	case r.Sentinel != nil:
		errs = append(errs, r.Sentinel.validate("store.redis.sentinel")...)
		if r.Sentinel.Replicas < -1 {
			bad("redis.sentinel.replicas", "%d: want -1 (do not wait), 0 (the default, 1) or more", r.Sentinel.Replicas)
		}
	default:
		bad("redis", "address or sentinel required")
	}
	for key, ref := range map[string]*SecretRef{"redis.password": r.Password, "redis.sentinel.password": r.sentinelPassword()} {
		if ref != nil {
			if err := ref.validate(); err != nil {
				bad(key, "%v", err)
			}
		}
	}
	if r.DB < 0 || r.DB > 15 {
		bad("redis.db", "%d: want 0 to 15", r.DB)
	}
	return errs
}

func (r *StoreRedisConfig) sentinelPassword() *SecretRef {
	if r.Sentinel == nil {
		return nil
	}
	return r.Sentinel.Password
}

// negative is the problem of key when v is below zero, else nil (which errors.Join drops).
func negative[T ~int | ~int64 | ~float64](key string, v T) error {
	if v < 0 {
		return fmt.Errorf("%s: %v: must not be negative", key, v)
	}
	return nil
}

func gatewayDomainOK(d string) error {
	if d == "" || len(d) > 200 || strings.HasPrefix(d, ".") || strings.HasSuffix(d, ".") {
		return errors.New("bad domain")
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" {
			return errors.New("empty label")
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return errors.New("bad character")
			}
		}
	}
	return nil
}

func (s *SecretRef) validate() error {
	if (s.File == "") == (s.Env == "") {
		return errors.New("give exactly one of file or env")
	}
	return nil
}

// resolve reads the secret a reference names: the variable's value, or the first line of the
// file, which must be readable by its owner only (anyone else who can read it holds the
// secret). Errors name the reference, never the value.
func (s *SecretRef) resolve(env func(string) string) ([]byte, error) {
	if s.Env != "" {
		v := strings.TrimSpace(env(s.Env))
		if v == "" {
			return nil, fmt.Errorf("env %s: not set", s.Env)
		}
		return []byte(v), nil
	}
	data, err := readSecretFile(s.File)
	if err != nil {
		return nil, err
	}
	line, _, _ := bytes.Cut(data, []byte("\n"))
	line = bytes.Clone(bytes.TrimSpace(line))
	clear(data)
	if len(line) == 0 {
		return nil, fmt.Errorf("file %s: empty", s.File)
	}
	return line, nil
}

// readSecretFile reads a file of secrets (at most 1 MiB), which must exist, be readable,
// and be readable by its owner only. Errors name the file, never its content.
func readSecretFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		var pe *fs.PathError
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("file %s: does not exist", path)
		case errors.As(err, &pe):
			return nil, fmt.Errorf("file %s: cannot be read: %w", path, pe.Err)
		}
		return nil, fmt.Errorf("file %s: %w", path, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("file %s: %w", path, err)
	}
	if info.IsDir() {
		return nil, fmt.Errorf("file %s: cannot be read: is a directory", path)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("file %s: mode %04o gives %s access: want 0600 (chmod 600 %s)", path, perm, readers(perm), path)
	}
	data, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("file %s: cannot be read: %w", path, err)
	}
	return data, nil
}

// readers names who besides its owner may touch a file of mode perm.
func readers(perm fs.FileMode) string {
	switch {
	case perm&0o070 != 0 && perm&0o007 != 0:
		return "its group and others"
	case perm&0o070 != 0:
		return "its group"
	}
	return "others"
}

// trustedPrefixes parses TrustedProxies (validated already).
func (c *Config) trustedPrefixes() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(c.TrustedProxies))
	for _, p := range c.TrustedProxies {
		if pfx, err := registry.ParseCIDR(p); err == nil {
			out = append(out, pfx)
		}
	}
	return out
}

// gatewayURL returns the function giving a gateway's public base URL (browser.gateway_url).
func (c *Config) gatewayURL() func(id string) string {
	tmpl := c.Browser.GatewayURL
	if tmpl == "" {
		tmpl = "https://{id}." + c.GatewayDomain
		if d := strings.ToLower(c.GatewayDomain); d == "localhost" || strings.HasSuffix(d, ".localhost") {
			tmpl = "http://{id}." + c.GatewayDomain
			if _, port, err := net.SplitHostPort(c.Listen); err == nil && port != "80" {
				tmpl += ":" + port
			}
		}
	}
	return func(id string) string { return strings.ReplaceAll(tmpl, "{id}", id) }
}
