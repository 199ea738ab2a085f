package proxy_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy"
	"github.com/moltgate/moltgate/proxy/authn"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
	"github.com/moltgate/moltgate/proxy/browser"
	"github.com/moltgate/moltgate/ratelimit"
	"github.com/moltgate/moltgate/registry"
)

// limitedProxy is the fixture's proxy with a budget of 3 failed authentications per client
// per hour, behind the trusted proxy 127.0.0.1, on its own clock.
type limitedProxy struct {
	*fixture
	srv     *httptest.Server
	clock   *testenv.Clock
	metrics *prometheus.Registry
}

func newLimitedProxy(t *testing.T) *limitedProxy {
	t.Helper()
	f := newFixture(t, registry.AuthToken)
	lp := &limitedProxy{fixture: f, clock: testenv.NewClock(time.Now()), metrics: prometheus.NewRegistry()}
	budget, err := ratelimit.NewMemory(ratelimit.MemoryConfig{Limit: ratelimit.Limit{Rate: 3, Per: time.Hour, Burst: 3}, Now: lp.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	lp.srv = httptest.NewServer(limitedHandler(t, f, budget, lp.clock.Now, lp.metrics))
	t.Cleanup(lp.srv.Close)
	return lp
}

// limitedHandler is f's proxy with budget, behind the trusted proxy 127.0.0.1, its metrics in
// reg.
func limitedHandler(t testing.TB, f *fixture, budget proxy.FailureBudget, now func() time.Time, reg *prometheus.Registry) http.Handler {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	clerk, err := authn.NewClerk(authn.ClerkConfig{APIURL: f.clerk.URL, SecretKey: f.clerk.SecretKey(),
		Issuer: f.clerk.Issuer(), AuthorizedParties: []string{clerktest.DefaultAuthorizedParty}}, logger, reg)
	if err != nil {
		t.Fatal(err)
	}
	tr := proxy.NewTransport(proxy.TransportConfig{})
	t.Cleanup(tr.CloseIdleConnections)
	h, err := proxy.New(proxy.Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Transport: tr,
		AuthFailureWindow: time.Minute},
		proxy.Deps{Gateways: f.reg, Policy: f.engine, Sessions: clerk, Audit: f.audit, Logger: logger, Metrics: reg,
			Browser: f.browsers, Relay: f.relay, Now: now, AuthFailures: budget})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// get sends GET target to gwa from the loopback address from (127.0.0.1 is the trusted
// proxy), with headers hdr, and returns the status, the refusal reason and Retry-After.
func (lp *limitedProxy) get(t *testing.T, from, target string, hdr map[string]string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", lp.srv.URL+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "gwa.gw.localhost"
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	tr := &http.Transport{DialContext: dialer.DialContext, DisableKeepAlives: true}
	c := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	_, after, _ := strings.Cut(string(b), `"reason":"`)
	reason, _, _ := strings.Cut(after, `"`)
	return resp.StatusCode, reason, resp.Header.Get("Retry-After")
}

// limitedEvents are the audit events of clients refused for their failures.
func (lp *limitedProxy) limitedEvents(t *testing.T) []audit.Event {
	var out []audit.Event
	for _, e := range lp.events(t) {
		if e.Reason == "auth_rate_limited" {
			out = append(out, e)
		}
	}
	return out
}

// TestAuthFailureLimit (issue 11): a client address that failed 3 authentications, of any
// kind (a bad bearer, an unknown gateway token, a bad session cookie, a bad launch code), is
// refused 429 auth_rate_limited with Retry-After before any credential it sends is checked,
// a valid one included, until its budget affords a failure again; other addresses are not
// affected. The refusals are audited once per client per window, counted. Forwarding
// headers from an untrusted peer neither evade the limit nor spend another client's budget.
func TestAuthFailureLimit(t *testing.T) {
	lp := newLimitedProxy(t)
	viaProxy := func(client string, hdr map[string]string) map[string]string {
		out := map[string]string{"X-Forwarded-For": client}
		for k, v := range hdr {
			out[k] = v
		}
		return out
	}
	valid := map[string]string{"Authorization": "Bearer " + tokA}
	failures := []struct {
		name, target string
		hdr          map[string]string
	}{
		{"an unknown gateway token", "/", map[string]string{"Authorization": "Bearer " + strings.Repeat("c", 64)}},
		{"a bad session cookie", "/", map[string]string{"Cookie": browser.CookieHTTP + "=not-a-session"}},
		{"a bad launch code", "/.moltgate/launch?code=guessed", nil},
	}
	const attacker, bystander = "198.51.100.7", "198.51.100.8"
	for _, fl := range failures {
		if status, reason, _ := lp.get(t, "127.0.0.1", fl.target, viaProxy(attacker, fl.hdr)); status != http.StatusUnauthorized {
			t.Fatalf("%s: got %d %q, want 401", fl.name, status, reason)
		}
	}
	before := lp.up.count()
	for i := range 4 {
		status, reason, retry := lp.get(t, "127.0.0.1", "/", viaProxy(attacker, valid))
		if status != http.StatusTooManyRequests || reason != "auth_rate_limited" || retry != "1200" {
			t.Fatalf("valid token %d from the blocked client: got %d %q Retry-After %q, want 429 auth_rate_limited, Retry-After 1200",
				i, status, reason, retry)
		}
	}
	if lp.up.count() != before {
		t.Errorf("a blocked client's request reached the gateway")
	}
	if status, _, _ := lp.get(t, "127.0.0.1", "/", viaProxy(bystander, valid)); status != http.StatusOK {
		t.Errorf("another client with a valid token: got %d, want 200", status)
	}
	evs := lp.limitedEvents(t)
	if len(evs) != 1 || evs[0].ClientIP != attacker || evs[0].Type != audit.TypeAuthnFailure || evs[0].Details["count"] != "1" {
		t.Fatalf("audit events of the blocked client: %+v, want one authn.failure for %s, count 1", evs, attacker)
	}
	lp.clock.Advance(time.Minute) // a window later: one more event, counting the refusals since
	lp.get(t, "127.0.0.1", "/", viaProxy(attacker, valid))
	if evs = lp.limitedEvents(t); len(evs) != 2 || evs[1].Details["count"] != "4" {
		t.Fatalf("audit events a window later: %+v, want a second one counting 4", evs)
	}
	if got := testutil.ToFloat64(mustCounter(t, lp.metrics, "moltgate_authn_rate_limited_total")); got != 5 {
		t.Errorf("moltgate_authn_rate_limited_total: got %v, want 5", got)
	}
	lp.clock.Advance(19 * time.Minute) // the budget affords one failure again
	if status, _, _ := lp.get(t, "127.0.0.1", "/", viaProxy(attacker, valid)); status != http.StatusOK {
		t.Errorf("valid token once the budget affords a failure: got %d, want 200", status)
	}

	t.Run("forwarding headers from an untrusted peer", func(t *testing.T) {
		const peer, framed = "127.0.0.2", "198.51.100.9"
		for i := range 3 {
			// Each failure claims another address: the peer's own budget pays for all.
			hdr := map[string]string{"X-Forwarded-For": framed, "Cf-Connecting-Ip": "198.51.100.1" + string(rune('0'+i)),
				"Authorization": "Bearer wrong"}
			if status, _, _ := lp.get(t, peer, "/", hdr); status != http.StatusUnauthorized {
				t.Fatalf("failure %d from the untrusted peer: got %d, want 401", i, status)
			}
		}
		if status, reason, _ := lp.get(t, peer, "/", map[string]string{"X-Forwarded-For": "198.51.100.99",
			"Authorization": "Bearer " + tokA}); status != http.StatusTooManyRequests {
			t.Errorf("the untrusted peer under another claimed address: got %d %q, want 429 (no evasion)", status, reason)
		}
		if status, _, _ := lp.get(t, "127.0.0.1", "/", viaProxy(framed, valid)); status != http.StatusOK {
			t.Errorf("the address the untrusted peer claimed, through the trusted proxy: got %d, want 200 (not framed)", status)
		}
	})
}

// TestAuthFailureLimitCountsSocketConnect (issue 11): a bad token in a socket's connect
// request is a failed authentication too; past the budget the client's next upgrade is
// refused 429, a valid bearer on it included.
func TestAuthFailureLimitCountsSocketConnect(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	clock := testenv.NewClock(time.Now())
	budget, err := ratelimit.NewMemory(ratelimit.MemoryConfig{Limit: ratelimit.Limit{Rate: 3, Per: time.Hour, Burst: 3}, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(limitedHandler(t, f, budget, clock.Now, prometheus.NewRegistry()))
	t.Cleanup(srv.Close)
	dial := func(header http.Header) (*client, *http.Response, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws",
			&websocket.DialOptions{HTTPHeader: header, Host: "gwa.gw.localhost"})
		if err != nil {
			return nil, resp, err
		}
		t.Cleanup(func() { c.CloseNow() })
		return &client{t: t, c: c}, resp, nil
	}
	for i := range 3 {
		c, _, err := dial(nil)
		if err != nil {
			t.Fatalf("anonymous upgrade %d: %v", i, err)
		}
		c.read() // the challenge
		if res := c.call("connect", map[string]any{"auth": map[string]any{"token": "wrong"}}); res["ok"] == true {
			t.Fatalf("connect %d with a bad token: %v, want refused", i, res)
		}
	}
	_, resp, err := dial(bearerHeader(tokA))
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("upgrade with a valid bearer after 3 bad connects: %v (status %d), want 429", err, status)
	}
}
