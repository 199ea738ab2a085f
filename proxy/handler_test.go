package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/proxy"
	"github.com/moltgate/moltgate/proxy/authn"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
	"github.com/moltgate/moltgate/proxy/browser"
	"github.com/moltgate/moltgate/proxy/wsrelay"
	"github.com/moltgate/moltgate/registry"
	"github.com/moltgate/moltgate/store"
)

// TestMain fails the package if a goroutine outlives the tests. Only idle keep-alive
// connections of net/http clients are let go (the shared transports keep them); a relay or
// handler goroutine blocked on a read anywhere else is a leak.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"))
}

// upstream is a stand-in gateway that records what it received.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen []*http.Request
	body [][]byte
	ws   wsGateway
	// released lets serveStream write the second part of its stream: the test closes it
	// once it has read the first.
	released chan struct{}
}

// serveStream answers /stream (a body of unknown length) and /events (server-sent events,
// whose length is not known either) in two parts: the second is written only once the test
// has read the first, so a proxy that holds streamed bytes back makes the test time out.
func (u *upstream) serveStream(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/events" {
		w.Header().Set("Content-Type", "text/event-stream")
	}
	io.WriteString(w, "data: first\n\n")
	http.NewResponseController(w).Flush()
	select {
	case <-u.released:
	case <-r.Context().Done():
		return
	case <-time.After(30 * time.Second):
	}
	io.WriteString(w, "data: second\n\n")
}

func newUpstream(t testing.TB) *upstream {
	u := &upstream{released: make(chan struct{})}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "websocket" {
			u.serveWS(w, r)
			return
		}
		if r.URL.Path == "/stream" || r.URL.Path == "/events" {
			u.serveStream(w, r)
			return
		}
		if r.URL.Path == "/set-cookies" {
			// A gateway that tries to set moltgate's cookie, and one for every host of the domain.
			w.Header().Add("Set-Cookie", "moltgate=fixated; Path=/")
			w.Header().Add("Set-Cookie", "__Host-moltgate=fixated; Path=/; Secure")
			w.Header().Add("Set-Cookie", "wide=1; Domain=gw.localhost; Path=/")
			w.Header().Add("Set-Cookie", "own=1; Path=/; HttpOnly")
		}
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.seen = append(u.seen, r.Clone(r.Context()))
		u.body = append(u.body, b)
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) last(t *testing.T) (*http.Request, []byte) {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		t.Fatal("upstream received nothing")
	}
	return u.seen[len(u.seen)-1], u.body[len(u.body)-1]
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.seen)
}

const (
	tokA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	tokB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

type fixture struct {
	srv      *httptest.Server
	up       *upstream
	clerk    *clerktest.Server
	reg      *registry.Registry
	engine   *policies.Engine
	auditDir string
	metrics  *prometheus.Registry
	relay    *wsrelay.Relay
	audit    *audit.FileLog
	browsers *browser.Sessions
	clock    *testenv.Clock // the browser sessions' clock
}

// newFixture runs the real proxy with the real policy engine, registry, Clerk verifier (against
// clerktest) and audit log, in front of a recording upstream. Gateway "gwa" (tenant-a, owner
// user_owner, token tokA, members user_viewer/operator/admin) and "gwb" (tenant-b, token tokB).
func newFixture(t testing.TB, mode registry.AuthMode, trusted ...string) *fixture {
	t.Helper()
	return buildFixture(t, mode, nil, trusted...)
}

// buildFixture is newFixture with a WebSocket relay when wsCfg is not nil.
func buildFixture(t testing.TB, mode registry.AuthMode, wsCfg *wsrelay.Config, trusted ...string) *fixture {
	t.Helper()
	return buildFixtureWith(t, policies.Config{Timeout: testDecisionTimeout}, mode, wsCfg, trusted...)
}

// buildFixtureWith is buildFixture with the policy engine configured by pcfg.
func buildFixtureWith(t testing.TB, pcfg policies.Config, mode registry.AuthMode, wsCfg *wsrelay.Config, trusted ...string) *fixture {
	t.Helper()
	f := &fixture{up: newUpstream(t), clerk: clerktest.New(t), auditDir: filepath.Join(t.TempDir(), "audit"),
		metrics: prometheus.NewRegistry()}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	engine, err := policies.New(t.Context(), pcfg, logger, f.metrics)
	if err != nil {
		t.Fatal(err)
	}
	f.engine = engine
	kv, err := store.OpenBolt(filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })
	ring, _ := keystore.NewKeyring(1, bytes.Repeat([]byte{9}, 32))
	f.reg, err = registry.New(t.Context(), kv, keystore.New(ring), engine, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []struct {
		gw  registry.Gateway
		tok string
	}{
		{registry.Gateway{ID: "gwa", Tenant: "tenant-a", Owner: "user_owner", Upstream: f.up.URL, AuthMode: mode,
			Members: map[string]string{"user_viewer": "viewer", "user_operator": "operator", "user_admin": "admin"}}, tokA},
		{registry.Gateway{ID: "gwb", Tenant: "tenant-b", Owner: "user_other", Upstream: f.up.URL, AuthMode: mode}, tokB},
	} {
		if _, err := f.reg.Create(t.Context(), g.gw, g.tok); err != nil {
			t.Fatal(err)
		}
	}
	clerk, err := authn.NewClerk(authn.ClerkConfig{APIURL: f.clerk.URL, SecretKey: f.clerk.SecretKey(),
		Issuer: f.clerk.Issuer(), AuthorizedParties: []string{clerktest.DefaultAuthorizedParty}}, logger, f.metrics)
	if err != nil {
		t.Fatal(err)
	}
	auditLog, err := audit.OpenFile(audit.FileConfig{Dir: f.auditDir}, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { auditLog.Close() })
	f.audit = auditLog
	var prefixes []netip.Prefix
	for _, p := range trusted {
		prefixes = append(prefixes, netip.MustParsePrefix(p))
	}
	tr := proxy.NewTransport(proxy.TransportConfig{})
	t.Cleanup(tr.CloseIdleConnections)
	var relay *wsrelay.Relay
	if wsCfg != nil {
		relay, err = wsrelay.New(*wsCfg, wsrelay.Deps{Gateways: f.reg, Policy: engine, Sessions: clerk, Audit: auditLog,
			Logger: logger, Metrics: f.metrics})
		if err != nil {
			t.Fatal(err)
		}
		f.relay = relay
		f.reg.Subscribe(func(id string) { go relay.Recheck(context.Background(), id) })
		t.Cleanup(func() { relay.Shutdown(context.Background()) })
	}
	f.clock = testenv.NewClock(time.Now())
	f.browsers, err = browser.New(browser.Config{Now: f.clock.Now, CheckInterval: time.Second}, kv, clerk, logger, f.metrics)
	if err != nil {
		t.Fatal(err)
	}
	h, err := proxy.New(proxy.Config{TrustedProxies: prefixes, MaxToolBodyBytes: 4096, Transport: tr, SignInURL: signInURL},
		proxy.Deps{Gateways: f.reg, Policy: engine, Sessions: clerk, Audit: auditLog, Logger: logger, Metrics: f.metrics,
			Relay: relay, Browser: f.browsers, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(h)
	t.Cleanup(f.srv.Close)
	return f
}

// signInURL is the fixture's dashboard sign-in page.
var signInURL, _ = url.Parse("https://dashboard.example.test/sign-in")

func (f *fixture) user(sub string) string {
	return f.clerk.Mint(clerktest.Claims{Subject: sub})
}

type call struct {
	method, host, path, body string
	header                   map[string]string
}

func (f *fixture) do(t *testing.T, c call) (int, map[string]string) {
	t.Helper()
	status, _, body := f.decided(t, c)
	return status, body
}

// lastEvent returns the newest audit event, after checking the chain.
func (f *fixture) lastEvent(t *testing.T) (audit.Event, int) {
	t.Helper()
	n, err := audit.VerifyDir(f.auditDir)
	if err != nil {
		t.Fatalf("audit chain: %v", err)
	}
	if n == 0 {
		return audit.Event{}, 0
	}
	data, _ := os.ReadFile(filepath.Join(f.auditDir, "events-000001.jsonl"))
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	var e audit.Event
	if err := json.Unmarshal(lines[len(lines)-1], &e); err != nil {
		t.Fatal(err)
	}
	return e, n
}

// events returns every audit event, after checking the chain.
func (f *fixture) events(t *testing.T) []audit.Event {
	t.Helper()
	if _, err := audit.VerifyDir(f.auditDir); err != nil {
		t.Fatalf("audit chain: %v", err)
	}
	data, _ := os.ReadFile(filepath.Join(f.auditDir, "events-000001.jsonl"))
	var out []audit.Event
	for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		var e audit.Event
		if len(line) > 0 && json.Unmarshal(line, &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

func TestDecisions(t *testing.T) {
	f := newFixture(t, registry.AuthToken)
	expired := f.clerk.Mint(clerktest.Claims{Subject: "user_owner", IssuedAt: timeAgo(20), Expiry: timeAgo(10)})
	tests := []struct {
		name      string
		c         call
		status    int
		reason    string
		eventType string
		forwarded bool
		wantActor string
	}{
		{"owner reads", call{path: "/health", header: bearer(f.user("user_owner"))}, 200, "", "", true, ""},
		{"owner by cookie", call{path: "/health", header: map[string]string{"Cookie": "__session=" + f.user("user_owner")}}, 200, "", "", true, ""},
		{"owner writes", call{method: "POST", path: "/hooks/x", header: bearer(f.user("user_owner"))}, 200, "", "", true, ""},
		{"viewer reads", call{path: "/", header: bearer(f.user("user_viewer"))}, 200, "", "", true, ""},
		{"viewer may not write", call{method: "POST", path: "/hooks/x", header: bearer(f.user("user_viewer"))}, 403, "role_forbids", audit.TypePolicyDeny, false, "user_viewer"},
		{"viewer may not invoke tools", call{method: "POST", path: "/tools/invoke", body: `{"tool":"sessions_list"}`, header: bearer(f.user("user_viewer"))}, 403, "role_forbids", audit.TypePolicyDeny, false, "user_viewer"},
		{"operator invokes", call{method: "POST", path: "/tools/invoke", body: `{"tool":"sessions_list","args":{}}`, header: bearer(f.user("user_operator"))}, 200, "", "", true, ""},
		{"stranger", call{path: "/", header: bearer(f.user("user_stranger"))}, 403, "not_a_member", audit.TypePolicyDeny, false, "user_stranger"},
		{"anonymous", call{path: "/"}, 401, "unauthenticated", audit.TypePolicyDeny, false, ""},
		{"gateway token", call{path: "/control-ui-config.json", header: bearer(tokA)}, 200, "", "", true, ""},
		{"other tenant's token", call{path: "/", header: bearer(tokB)}, 403, "wrong_gateway", audit.TypePolicyDeny, false, "token:gwb"},
		{"unknown token", call{path: "/", header: bearer(strings.Repeat("c", 64))}, 401, "unknown_token", audit.TypeAuthnFailure, false, ""},
		{"expired jwt", call{path: "/", header: bearer(expired)}, 401, "expired", audit.TypeAuthnFailure, false, ""},
		{"alg none", call{path: "/", header: bearer(f.clerk.ForgeAlgNone(clerktest.Claims{Subject: "user_owner"}))}, 401, "", audit.TypeAuthnFailure, false, ""},
		{"hs256 with public key", call{path: "/", header: bearer(f.clerk.ForgeHS256WithPublicKey(clerktest.Claims{Subject: "user_owner"}))}, 401, "", audit.TypeAuthnFailure, false, ""},
		{"foreign key", call{path: "/", header: bearer(f.clerk.ForgeForeignKey(clerktest.Claims{Subject: "user_owner"}))}, 401, "", audit.TypeAuthnFailure, false, ""},
		{"wrong azp", call{path: "/", header: bearer(f.clerk.Mint(clerktest.Claims{Subject: "user_owner", AuthorizedParty: "https://evil.test"}))}, 401, "wrong_audience", audit.TypeAuthnFailure, false, ""},
		{"no sid", call{path: "/", header: bearer(f.clerk.Mint(clerktest.Claims{Subject: "user_owner", OmitSessionID: true}))}, 401, "no_session", audit.TypeAuthnFailure, false, ""},
		{"garbage bearer", call{path: "/", header: bearer("not.a.jwt")}, 401, "", audit.TypeAuthnFailure, false, ""},
		{"basic auth", call{path: "/", header: map[string]string{"Authorization": "Basic dXNlcjpwYXNz"}}, 401, "malformed", audit.TypeAuthnFailure, false, ""},
		{"host with port and dot", call{host: "gwa.gw.localhost.:443", path: "/health", header: bearer(tokA)}, 200, "", "", true, ""},
		{"encoded slash", call{path: "/tools%2finvoke", header: bearer(tokA)}, 400, "bad_path", audit.TypePolicyDeny, false, ""},
		{"tool body too large", call{method: "POST", path: "/tools/invoke", body: `{"tool":"x","pad":"` + strings.Repeat("p", 5000) + `"}`, header: bearer(tokA)}, 413, "body_too_large", audit.TypePolicyDeny, false, "token:gwa"},
		{"tool body not json", call{method: "POST", path: "/tools/invoke", body: `{"tool":`, header: bearer(tokA)}, 400, "bad_body", audit.TypePolicyDeny, false, "token:gwa"},
		{"websocket refused until relayed", call{path: "/", header: map[string]string{"Authorization": "Bearer " + tokA, "Connection": "Upgrade", "Upgrade": "websocket"}}, 403, "websocket_not_enabled", audit.TypePolicyDeny, false, "token:gwa"},
		// Issue 16: an h2c upgrade is not a WebSocket that relaying would allow.
		{"h2c upgrade", call{path: "/", header: map[string]string{"Authorization": "Bearer " + tokA, "Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c", "HTTP2-Settings": "AAMAAABkAAQAoAAAAAIAAAAA"}}, 400, "upgrade_not_supported", audit.TypePolicyDeny, false, "token:gwa"},
		{"connection upgrade without a protocol", call{path: "/", header: map[string]string{"Authorization": "Bearer " + tokA, "Connection": "Upgrade"}}, 400, "upgrade_not_supported", audit.TypePolicyDeny, false, "token:gwa"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.up.count()
			_, eventsBefore := f.lastEvent(t)
			status, body := f.do(t, tt.c)
			if status != tt.status {
				t.Fatalf("status: got %d, want %d (body %v)", status, tt.status, body)
			}
			if tt.reason != "" && body["reason"] != tt.reason {
				t.Fatalf("reason: got %q, want %q", body["reason"], tt.reason)
			}
			if tt.status >= 400 && (body["error"] == "" || body["reason"] == "") {
				t.Fatalf("refusal body: got %v, want error and reason", body)
			}
			if got := f.up.count() > before; got != tt.forwarded {
				t.Fatalf("forwarded: got %v, want %v", got, tt.forwarded)
			}
			ev, events := f.lastEvent(t)
			if tt.eventType == "" {
				if events != eventsBefore {
					t.Fatalf("unexpected audit event %+v", ev)
				}
				return
			}
			if events != eventsBefore+1 || ev.Type != tt.eventType || ev.Outcome != "deny" {
				t.Fatalf("audit: got %d→%d events, last %+v; want one %s", eventsBefore, events, ev, tt.eventType)
			}
			if tt.reason != "" && ev.Reason != tt.reason {
				t.Fatalf("audit reason: got %q, want %q", ev.Reason, tt.reason)
			}
			if tt.wantActor != "" && ev.Actor.ID != tt.wantActor {
				t.Fatalf("audit actor: got %+v, want %s", ev.Actor, tt.wantActor)
			}
			if ev.Gateway != "gwa" || ev.Tenant != "tenant-a" || ev.RequestID == "" || ev.ClientIP != "127.0.0.1" {
				t.Fatalf("audit event fields: %+v", ev)
			}
			raw, _ := json.Marshal(ev)
			for _, secret := range []string{tokA, tokB, "eyJ"} {
				if bytes.Contains(raw, []byte(secret)) {
					t.Fatalf("audit event holds a credential: %s", raw)
				}
			}
		})
	}
	if got := testutil.ToFloat64(mustCounter(t, f.metrics, "moltgate_authn_failures_total", "expired")); got < 1 {
		t.Fatalf("authn failure metric: got %v", got)
	}
}

func timeAgo(minutes int) time.Time { return time.Now().Add(-time.Duration(minutes) * time.Minute) }

func mustCounter(t *testing.T, reg *prometheus.Registry, name string, labels ...string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i, lp := range m.GetLabel() {
				if i < len(labels) && lp.GetValue() != labels[i] {
					continue next
				}
			}
			return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x", Help: "x"}, func() float64 { return m.GetCounter().GetValue() })
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return nil
}

func TestForwardedRequestCarriesOnlyGatewayCredentials(t *testing.T) {
	f := newFixture(t, registry.AuthToken)
	jwt := f.user("user_operator")
	status, _ := f.do(t, call{method: "POST", path: "/a/../tools//invoke?x=1", body: `{"tool":"sessions_list","args":{"k":"v"}}`,
		header: map[string]string{
			"Authorization":       "Bearer " + jwt,
			"Cookie":              "__session=" + jwt + "; __client_uat=1; theme=dark",
			"X-Forwarded-For":     "6.6.6.6",
			"X-Forwarded-User":    "user_owner",
			"X-Openclaw-Scopes":   "operator.admin",
			"Forwarded":           "for=6.6.6.6",
			"X-Real-Ip":           "6.6.6.6",
			"Cf-Connecting-Ip":    "6.6.6.6",
			"Proxy-Authorization": "Basic eA==",
		}})
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	r, body := f.up.last(t)
	if got := r.Header.Get("Authorization"); got != "Bearer "+tokA {
		t.Fatalf("upstream Authorization: got %q, want the gateway token", got)
	}
	if got := r.Header.Get("Cookie"); got != "theme=dark" {
		t.Fatalf("upstream Cookie: got %q, want only theme=dark", got)
	}
	for _, h := range []string{"X-Forwarded-For", "X-Forwarded-User", "X-Openclaw-Scopes", "Forwarded", "X-Real-Ip", "Cf-Connecting-Ip", "Proxy-Authorization"} {
		if v := r.Header.Get(h); v != "" {
			t.Errorf("upstream got %s: %q", h, v)
		}
	}
	if r.URL.Path != "/tools/invoke" || r.URL.RawQuery != "x=1" {
		t.Fatalf("upstream path: got %q?%q", r.URL.Path, r.URL.RawQuery)
	}
	if string(body) != `{"tool":"sessions_list","args":{"k":"v"}}` {
		t.Fatalf("upstream body: got %q", body)
	}
	if r.Header.Get("X-Request-Id") == "" {
		t.Fatal("no request id upstream")
	}
}

// The gateway keeps some routes for operator.admin, or serves them as its owner, and in token
// mode sees every caller as its owner: moltgate keeps the rule, on the route the gateway
// takes, so a capability-scoped spelling of the path is held to it too.
func TestAdminRoutesAreForOwnerAndAdmins(t *testing.T) {
	f := newFixture(t, registry.AuthToken)
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/api/chat/media/outgoing/s1/a1/full", ""},
		{"GET", "/__openclaw__/cap/x/api/chat/media/outgoing/s1/a1/full", ""},
		{"POST", "/v1/chat/completions", "{}"},
		{"POST", "/__openclaw__/assistant-media", "{}"},
		{"POST", "/tools/invoke", `{"tool":" Sessions"}`}, // a tool the gateway keeps for its owner
	} {
		for user, want := range map[string]int{"user_viewer": 403, "user_operator": 403, "user_admin": 200, "user_owner": 200} {
			status, body := f.do(t, call{method: c.method, path: c.path, body: c.body, header: bearer(f.user(user))})
			if status != want || (want == 403 && body["reason"] != "role_forbids") {
				t.Errorf("%s %s %s: got %d %v, want %d", user, c.method, c.path, status, body, want)
			}
		}
	}
}

// The admin-http-rpc plugin's route runs owner methods by name: the owner's alone, with a
// fresh second factor, as on a socket.
func TestOwnerRoutes(t *testing.T) {
	f := newFixture(t, registry.AuthToken)
	fresh := f.clerk.Mint(clerktest.Claims{Subject: "user_owner", FactorAges: []int{5, 2}})
	for _, tt := range []struct {
		path, jwt string
		status    int
		reason    string
	}{
		{"/api/v1/admin/rpc", f.user("user_admin"), 403, "owner_only"},
		{"/__openclaw__/cap/x/api/v1/admin/rpc", f.user("user_admin"), 403, "owner_only"},
		{"/api/v1/admin/rpc", f.user("user_owner"), 403, "second_factor_required"},
		{"/api/v1/admin/rpc", fresh, 200, ""},
		// The gateway decodes plugin route paths again and again; moltgate refuses a second
		// layer of encoding instead of deciding on the first.
		{"/api/v1/admin/%2572pc", f.user("user_admin"), 400, "bad_path"},
		{"/api/v1/%2561dmin/rpc", f.user("user_operator"), 400, "bad_path"},
	} {
		status, body := f.do(t, call{method: "POST", path: tt.path, body: `{"method":"config.get"}`, header: bearer(tt.jwt)})
		if status != tt.status || (tt.reason != "" && body["reason"] != tt.reason) {
			t.Errorf("POST %s: got %d %v, want %d %s", tt.path, status, body, tt.status, tt.reason)
		}
	}
	if status, body := f.do(t, call{method: "POST", path: "/api/v1/admin/rpc", body: `{}`, header: bearer(tokA)}); status != 403 || body["reason"] != "owner_only" {
		t.Errorf("gateway token: got %d %v, want 403 owner_only", status, body)
	}
}

// Whatever header a trusted-proxy gateway is configured to read the user from, a client
// cannot fill it in: the identity headers of common authenticating proxies are removed.
func TestClientIdentityHeadersNeverReachTheGateway(t *testing.T) {
	f := newFixture(t, registry.AuthTrustedProxy)
	spoofed := []string{"X-Forwarded-User", "X-Remote-User", "Remote-User", "X-Pomerium-Claim-Email",
		"Cf-Access-Authenticated-User-Email", "Cf-Access-Jwt-Assertion", "X-Auth-Request-User", "X-Auth-Request-Email",
		"X-Goog-Authenticated-User-Email", "X-Amzn-Oidc-Identity", "X-Ms-Client-Principal-Name", "X-Openclaw-Whatever", "X-User"}
	h := bearer(f.user("user_viewer"))
	for _, k := range spoofed {
		h[k] = "user_owner"
	}
	if status, _ := f.do(t, call{path: "/", header: h}); status != 200 {
		t.Fatalf("status %d", status)
	}
	r, _ := f.up.last(t)
	for _, k := range spoofed {
		want := ""
		if k == "X-Forwarded-User" {
			want = "user_viewer"
		}
		if got := r.Header.Get(k); got != want {
			t.Errorf("upstream got %s %q, want %q", k, got, want)
		}
	}
}

func TestTrustedProxyModeSendsIdentityAndCappedScopes(t *testing.T) {
	f := newFixture(t, registry.AuthTrustedProxy)
	tests := []struct{ user, scopes string }{
		{"user_viewer", "operator.read"},
		{"user_operator", "operator.read,operator.write,operator.questions"},
		{"user_owner", "operator.read,operator.write,operator.admin"},
	}
	for _, tt := range tests {
		if status, _ := f.do(t, call{path: "/", header: bearer(f.user(tt.user))}); status != 200 {
			t.Fatalf("%s: status %d", tt.user, status)
		}
		r, _ := f.up.last(t)
		if got := r.Header.Get("X-Forwarded-User"); got != tt.user {
			t.Errorf("x-forwarded-user: got %q, want %q", got, tt.user)
		}
		if got := r.Header.Get("X-Openclaw-Scopes"); got != tt.scopes {
			t.Errorf("%s scopes: got %q, want %q", tt.user, got, tt.scopes)
		}
		if r.Header.Get("X-Forwarded-Proto") == "" || r.Header.Get("Authorization") != "" {
			t.Errorf("%s: proto %q, authorization %q", tt.user, r.Header.Get("X-Forwarded-Proto"), r.Header.Get("Authorization"))
		}
	}
}

func TestToolRules(t *testing.T) {
	f := newFixture(t, registry.AuthToken)
	if _, err := f.reg.Update(t.Context(), "gwa", func(g *registry.Gateway) error {
		g.Skills.Deny = []string{"exec"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		body   string
		status int
		reason string
	}{
		{`{"tool":"sessions_list"}`, 200, ""},
		{`{"tool":"exec"}`, 403, "tool_denied"},
		// encoding/json would match "TOOL" to a struct field; the gateway's JSON.parse would not.
		{`{"tool":"exec","TOOL":"sessions_list"}`, 403, "tool_denied"},
		{`{"tool":"sessions_list","tool":"exec"}`, 403, "tool_denied"},
		{`{"\u0074ool":"exec"}`, 403, "tool_denied"},
		{`{"args":{}}`, 403, "tool_missing"},
		{`{"tool":7}`, 400, "bad_body"},
		{`[]`, 400, "bad_body"},
		// The gateway trims the name, resolves its aliases (bash runs exec), and runs "name"
		// before "tool": each of these would run exec.
		{`{"tool":" exec"}`, 403, "tool_denied"},
		{`{"tool":"EXEC\n"}`, 403, "tool_denied"},
		{`{"tool":"exec\u00a0"}`, 403, "tool_denied"},
		{`{"tool":"\ufeffexec"}`, 403, "tool_denied"},
		{`{"tool":"bash"}`, 403, "tool_denied"},
		{`{"name":"exec"}`, 403, "tool_denied"},
		{`{"name":null,"tool":"exec"}`, 403, "tool_denied"},
		{`{"name":"Exec","tool":"bash"}`, 403, "tool_denied"},
		{`{"name":"exec","tool":"sessions_list"}`, 400, "ambiguous_tool"},
		{`{"name":"sessions_list","tool":"exec"}`, 400, "ambiguous_tool"},
		{`{"name":7,"tool":"sessions_list"}`, 400, "bad_body"},
		{`{"name":"sessions_list"}`, 200, ""},
		{`{"name":"   "}`, 403, "tool_missing"},
		{"{\"tool\":\"exec\xe2\x82\"}", 400, "bad_body"}, // not UTF-8
	}
	for _, tt := range tests {
		status, body := f.do(t, call{method: "POST", path: "/tools/invoke", body: tt.body, header: bearer(tokA)})
		if status != tt.status || (tt.reason != "" && body["reason"] != tt.reason) {
			t.Errorf("%s: got %d %v, want %d %s", tt.body, status, body, tt.status, tt.reason)
		}
	}
	// Other spellings of the endpoint are still tool calls, among them the gateway's
	// capability-scoped form, which it serves as /tools/invoke.
	for _, path := range []string{"/TOOLS/invoke/", "/__openclaw__/cap/x/tools/invoke", "/__openclaw__/cap/x/__openclaw__/cap/y/tools/invoke", "/__OpenClaw__/cap/node-1/Tools/Invoke"} {
		status, body := f.do(t, call{method: "POST", path: path, body: `{"tool":"exec"}`, header: bearer(tokA)})
		if status != 403 || body["reason"] != "tool_denied" {
			t.Errorf("%s: got %d %v, want 403 tool_denied", path, status, body)
		}
	}
	status, _ := f.do(t, call{method: "POST", path: "/__openclaw__/cap/x/tools/other", body: `{"tool":"exec"}`, header: bearer(tokA)})
	if status != 200 {
		t.Errorf("capability-scoped path that is not the tool endpoint: got %d, want it forwarded", status)
	}
	// A gzip-encoded body would be read differently here and upstream.
	status, _ = f.do(t, call{method: "POST", path: "/tools/invoke", body: "x", header: map[string]string{"Authorization": "Bearer " + tokA, "Content-Encoding": "gzip"}})
	if status != 400 {
		t.Fatalf("encoded body: got %d, want 400", status)
	}
}

func TestAllowlistAndTrustedProxies(t *testing.T) {
	for _, tt := range []struct {
		name    string
		trusted []string
		allow   []string
		xff     string
		status  int
	}{
		{"allowlist admits the peer", nil, []string{"127.0.0.1"}, "", 200},
		{"allowlist binds the owner", nil, []string{"192.0.2.0/24"}, "", 403},
		{"spoofed xff from untrusted peer changes nothing", nil, []string{"192.0.2.0/24"}, "192.0.2.7", 403},
		{"xff believed from a trusted proxy", []string{"127.0.0.0/8"}, []string{"192.0.2.0/24"}, "192.0.2.7", 200},
		{"trusted proxy, client outside", []string{"127.0.0.0/8"}, []string{"192.0.2.0/24"}, "198.51.100.1", 403},
		{"ipv6 allowlist", []string{"127.0.0.0/8"}, []string{"2001:db8::/32"}, "2001:db8::5", 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, registry.AuthToken, tt.trusted...)
			if _, err := f.reg.Update(t.Context(), "gwa", func(g *registry.Gateway) error { g.Allowlist = tt.allow; return nil }); err != nil {
				t.Fatal(err)
			}
			h := bearer(f.user("user_owner"))
			if tt.xff != "" {
				h["X-Forwarded-For"] = tt.xff
			}
			status, body := f.do(t, call{path: "/", header: h})
			if status != tt.status {
				t.Fatalf("got %d %v, want %d", status, body, tt.status)
			}
			if status == 403 {
				if body["reason"] != "ip_not_allowed" {
					t.Fatalf("reason %q", body["reason"])
				}
				ev, _ := f.lastEvent(t)
				if want := tt.xff; want == "" || len(tt.trusted) == 0 {
					if ev.ClientIP != "127.0.0.1" {
						t.Fatalf("audited client ip %q, want the peer", ev.ClientIP)
					}
				} else if ev.ClientIP != want {
					t.Fatalf("audited client ip %q, want %q", ev.ClientIP, want)
				}
			}
		})
	}
}

func TestUpstreamDown(t *testing.T) {
	f := newFixture(t, registry.AuthToken)
	f.up.Close()
	status, body := f.do(t, call{path: "/", header: bearer(tokA)})
	if status != 502 || body["reason"] != "upstream_unavailable" {
		t.Fatalf("got %d %v", status, body)
	}
	if strings.Contains(body["error"], "127.0.0.1") {
		t.Fatalf("refusal shows internals: %v", body)
	}
}

// A refusal whose audit event cannot be written is still a refusal, but answered 503
// audit_unavailable: never as if it were on record.
func TestRefusalThatCannotBeAuditedIs503(t *testing.T) {
	f := newFixture(t, registry.AuthToken)
	if status, body := f.do(t, call{path: "/"}); status != 401 || body["reason"] != "unauthenticated" {
		t.Fatalf("before: %d %v", status, body)
	}
	f.audit.Close()
	if status, body := f.do(t, call{path: "/"}); status != 503 || body["reason"] != "audit_unavailable" {
		t.Fatalf("audit closed: %d %v, want 503 audit_unavailable", status, body)
	}
	if f.up.count() != 0 {
		t.Fatal("a refused request reached the gateway")
	}
}

// Issue 16: a request for a gateway that does not exist was only counted, so "every refusal
// is audited" was not true. It is refused 404 unknown_gateway whatever it carries, and each
// client's such requests are summarised in proxy.probe events: the first at once, then at
// most one a minute, counting the requests since the last; an IPv6 client is its /64. A
// scanner is on record and cannot flood the audit trail.
func TestUnknownGatewayProbesAreSummarised(t *testing.T) {
	f := newFixture(t, registry.AuthToken, "127.0.0.1/32") // X-Forwarded-For names the client
	probe := func(client, host string) {
		t.Helper()
		status, body := f.do(t, call{host: host, path: "/x", header: map[string]string{"X-Forwarded-For": client,
			"Authorization": "Bearer " + tokA}})
		if status != http.StatusNotFound || body["reason"] != "unknown_gateway" {
			t.Fatalf("%s from %s: got %d %v, want 404 unknown_gateway", host, client, status, body)
		}
	}
	for _, host := range []string{"nope.gw.localhost", "gwb.gwa.gw.localhost", "gwa.example.com", "nope.gw.localhost"} {
		probe("198.51.100.7", host)
	}
	probe("2001:db8::1", "a.gw.localhost")
	probe("2001:db8::2", "b.gw.localhost")
	f.clock.Advance(59 * time.Second)
	probe("198.51.100.7", "c.gw.localhost")
	f.clock.Advance(time.Second)
	probe("198.51.100.7", "d.gw.localhost")
	probe("2001:db8::3", "e.gw.localhost")

	type summary struct{ client, host, count string }
	var got []summary
	for _, e := range f.events(t) {
		if err := audit.CheckSchema(e); err != nil {
			t.Error(err)
		}
		if e.Type != audit.TypeProxyProbe || e.Actor.Kind != "anonymous" || e.Reason != "unknown_gateway" ||
			e.Details["status"] != "404" || e.Details["path"] != "/x" || e.RequestID == "" {
			t.Fatalf("got %+v, want a proxy.probe event of an anonymous client refused 404 unknown_gateway", e)
		}
		if raw, _ := json.Marshal(e); bytes.Contains(raw, []byte(tokA)) {
			t.Fatalf("a credential in a probe event: %s", raw)
		}
		got = append(got, summary{e.ClientIP, e.Details["host"], e.Details["count"]})
	}
	want := []summary{
		{"198.51.100.7", "nope.gw.localhost", "1"},
		{"2001:db8::1", "a.gw.localhost", "1"},
		{"198.51.100.7", "d.gw.localhost", "5"}, // 3 counted, the one at 59 s, and this one
		{"2001:db8::3", "e.gw.localhost", "2"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("summary %d: got %v, want %v", i, got[i], want[i])
		}
	}
	if n := testutil.ToFloat64(mustCounter(t, f.metrics, "moltgate_http_requests_total", "4xx", "deny", "unknown")); n != 9 {
		t.Errorf("moltgate_http_requests_total{route=unknown}: got %v, want 9", n)
	}

	// A summary that cannot be recorded is not answered as if it were.
	f.audit.Close()
	if status, body := f.do(t, call{host: "nope.gw.localhost", header: map[string]string{"X-Forwarded-For": "192.0.2.1"}}); status != 503 ||
		body["reason"] != "audit_unavailable" {
		t.Fatalf("unrecorded summary: got %d %v, want 503 audit_unavailable", status, body)
	}
}

// testDecisionTimeout is the policy timeout of the fixtures: these tests are about what is
// decided, and -race on a loaded machine can hold one decision past the default 250 ms.
const testDecisionTimeout = 10 * time.Second
