package admin_test

import (
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/proxy/admin"
)

// testClock is a clock the test moves.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// probeFixture is the admin API behind a trusted proxy (X-Forwarded-For names the client)
// with a clock the test moves.
func probeFixture(t *testing.T) (*fixture, *testClock) {
	clock := &testClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	f := newFixture(t, func(c *admin.Config, d *admin.Deps) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		d.Now = clock.Now
	})
	return f, clock
}

// probe makes one call from client and returns its status, reason and Allow header; it fails
// the test on a redirect.
func (f *fixture) probe(t *testing.T, client, method, path string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, f.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Forwarded-For", client)
	req.Header.Set("Authorization", "Bearer not-a-credential")
	noRedirect := *f.srv.Client()
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if loc := resp.Header.Get("Location"); loc != "" {
		t.Errorf("%s %s: redirected to %s", method, path, loc)
	}
	var body struct{ Reason string }
	if method != "HEAD" {
		_ = jsonDecode(resp, &body)
	}
	return resp.StatusCode, body.Reason, resp.Header.Get("Allow")
}

// Issue 15, part 4: calls no route takes (OPTIONS, PATCH, TRACE, a method on the wrong route,
// a trailing slash, dot segments and "//", which ServeMux would redirect) were neither
// authenticated nor audited. They are still not authenticated (no credential is read), but
// each is answered by the API, never by the mux's default, and the first call of each
// client is an admin.probe event.
func TestAdminUnroutedCallsAreProbes(t *testing.T) {
	f, _ := probeFixture(t)
	cases := []struct {
		method, path string
		status       int
		reason       string
		allow        string
	}{
		{"OPTIONS", "/v1/gateways", 405, "method_not_allowed", "GET, POST"},
		{"PATCH", "/v1/gateways/gw1", 405, "method_not_allowed", "GET, DELETE"},
		{"TRACE", "/v1/gateways", 405, "method_not_allowed", "GET, POST"},
		{"POST", "/v1/gateways/gw1", 405, "method_not_allowed", "GET, DELETE"},
		{"DELETE", "/v1/audit", 405, "method_not_allowed", "GET"},
		{"GET", "/v1/gateways/", 404, "no_such_endpoint", ""},
		{"GET", "/v1/gateways/gw1/allowlist/", 404, "no_such_endpoint", ""},
		{"GET", "/v1", 404, "no_such_endpoint", ""},
		{"GET", "/v1/", 404, "no_such_endpoint", ""},
		{"GET", "/v1/nothing", 404, "no_such_endpoint", ""},
		{"GET", "/", 404, "no_such_endpoint", ""},
		{"POST", "/healthz", 404, "no_such_endpoint", ""},
		{"GET", "/v1/./gateways", 400, "bad_path", ""},
		{"GET", "/v1/gateways/../audit", 400, "bad_path", ""},
		{"DELETE", "/v1/gateways/gw1/..", 400, "bad_path", ""},
		{"GET", "/v1//gateways", 400, "bad_path", ""},
		{"GET", "/v1/../healthz", 400, "bad_path", ""},
	}
	for i, c := range cases {
		client := "192.0.2." + strconv.Itoa(i+1)
		status, reason, allow := f.probe(t, client, c.method, c.path)
		if status != c.status || reason != c.reason || allow != c.allow {
			t.Errorf("%s %s: got %d %s (Allow %q), want %d %s (Allow %q)", c.method, c.path, status, reason, allow, c.status, c.reason, c.allow)
		}
	}
	if status, _, _ := f.probe(t, "192.0.2.250", "GET", "/healthz"); status != 200 {
		t.Fatalf("GET /healthz: %d, want 200", status)
	}

	events := f.events(t)
	if len(events) != len(cases) {
		t.Fatalf("got %d events, want one admin.probe per client (%d): %+v", len(events), len(cases), events)
	}
	for i, e := range events {
		c := cases[i]
		type fields struct{ typ, actor, outcome, reason, client string }
		want := fields{audit.TypeAdminProbe, "anonymous", "deny", c.reason, "192.0.2." + strconv.Itoa(i+1)}
		got := fields{e.Type, e.Actor.Kind, e.Outcome, e.Reason, e.ClientIP}
		if got != want || e.Details["method"] != c.method || e.Details["path"] != c.path ||
			e.Details["status"] != strconv.Itoa(c.status) || e.Details["count"] != "1" {
			t.Errorf("%s %s: got %+v %v, want %+v", c.method, c.path, got, e.Details, want)
		}
	}
}

// A client's probing is summarised: its first call is an event, the next ones are counted,
// and the first call at least a ProbeInterval (one minute) after its last event is an event
// with the count. An IPv6 client is its /64.
func TestAdminProbesAreSummarisedPerClient(t *testing.T) {
	f, clock := probeFixture(t)
	for range 5 {
		f.probe(t, "198.51.100.7", "OPTIONS", "/v1/gateways")
	}
	f.probe(t, "2001:db8::1", "GET", "/v1/x")
	f.probe(t, "2001:db8::2", "GET", "/v1/x")
	f.probe(t, "2001:db8:0:1::1", "GET", "/v1/x")
	clock.add(59 * time.Second)
	f.probe(t, "198.51.100.7", "GET", "/v1/./gateways")
	clock.add(time.Second)
	f.probe(t, "198.51.100.7", "TRACE", "/v1/audit")
	f.probe(t, "2001:db8::3", "GET", "/v1/y")
	clock.add(time.Minute)
	f.probe(t, "198.51.100.7", "GET", "/v1/z")

	type summary struct{ client, path, count string }
	var got []summary
	for _, e := range f.events(t) {
		if e.Type != audit.TypeAdminProbe {
			t.Fatalf("an event of type %s: %+v", e.Type, e)
		}
		got = append(got, summary{e.ClientIP, e.Details["path"], e.Details["count"]})
	}
	want := []summary{
		{"198.51.100.7", "/v1/gateways", "1"},
		{"2001:db8::1", "/v1/x", "1"},
		{"2001:db8:0:1::1", "/v1/x", "1"},
		{"198.51.100.7", "/v1/audit", "6"}, // 4 counted, the one at 59 s, and this one
		{"2001:db8::3", "/v1/y", "2"},
		{"198.51.100.7", "/v1/z", "1"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("summary %d: got %v, want %v", i, got[i], want[i])
		}
	}
}

// A probe summary that cannot be recorded is answered 503 audit_unavailable.
func TestAdminProbeUnrecordedIs503(t *testing.T) {
	f, _ := probeFixture(t)
	f.audit.Close()
	if status, reason, _ := f.probe(t, "192.0.2.1", "OPTIONS", "/v1/gateways"); status != 503 || reason != "audit_unavailable" {
		t.Fatalf("got %d %s, want 503 audit_unavailable", status, reason)
	}
}
