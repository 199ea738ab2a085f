package admin_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/ratelimit"
)

// listFrom lists the gateways as client (X-Forwarded-For, the test's server being behind
// the trusted proxy 127.0.0.1) with the bearer cred ("" for none).
func listFrom(t *testing.T, f *fixture, client, cred string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, f.srv.URL+"/v1/gateways", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Forwarded-For", client)
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var refusal struct{ Reason string }
	_ = json.Unmarshal(data, &refusal)
	return answer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), reason: refusal.Reason}
}

// TestAdminAuthFailureLimit (issue 11): guessing the admin token spends the client address's
// budget of failed authentications (3 per hour here): past it every call of the address is
// refused 429 auth_rate_limited with Retry-After before its credential is read, the valid
// admin token included, while other addresses go on. A call with no credential guesses
// nothing and spends nothing. The refusals are audited once per client per window, and
// counted.
func TestAdminAuthFailureLimit(t *testing.T) {
	clock := testenv.NewClock(time.Now())
	budget, err := ratelimit.NewMemory(ratelimit.MemoryConfig{Limit: ratelimit.Limit{Rate: 3, Per: time.Hour, Burst: 3}, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	metrics := prometheus.NewRegistry()
	f := newFixture(t, func(c *admin.Config, d *admin.Deps) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		c.AuthFailureWindow = time.Minute
		d.AuthFailures, d.Now, d.Metrics = budget, clock.Now, metrics
	})
	const attacker, bystander = "192.0.2.1", "192.0.2.2"
	ok := answer{status: http.StatusOK}
	for i := range 5 {
		want(t, fmt.Sprintf("call %d with no credential", i), listFrom(t, f, attacker, ""),
			answer{status: http.StatusUnauthorized, reason: "unauthenticated"})
	}
	for i := range 3 {
		want(t, fmt.Sprintf("guess %d", i), listFrom(t, f, attacker, fmt.Sprintf("guess-%d-0123456789", i)),
			answer{status: http.StatusUnauthorized, reason: "malformed"}) // not a session token either
	}
	limited := answer{status: http.StatusTooManyRequests, retryAfter: "1200", reason: "auth_rate_limited"}
	want(t, "the valid admin token from the blocked address", listFrom(t, f, attacker, adminToken), limited)
	want(t, "another guess", listFrom(t, f, attacker, "guess-x-0123456789"), limited)
	want(t, "another address", listFrom(t, f, bystander, adminToken), ok)

	authLimited := func(e audit.Event) bool {
		return e.Type == audit.TypeAuthnFailure && e.Reason == "auth_rate_limited" && e.ClientIP == attacker
	}
	if got := count(f.events(t), authLimited); got != 1 {
		t.Errorf("auth_rate_limited events: got %d, want 1 for 2 refusals in one window", got)
	}
	if got := rateLimitedTotal(t, metrics, "auth_failures"); got != 2 {
		t.Errorf("auth_failures refusals counted: got %v, want 2", got)
	}

	// A window later the client is still blocked (one failure per 20 min): the next refusal
	// is recorded with the count since the last event.
	clock.Advance(time.Minute)
	want(t, "a minute later", listFrom(t, f, attacker, adminToken), answer{status: http.StatusTooManyRequests, retryAfter: "1140", reason: "auth_rate_limited"})
	var last audit.Event
	for _, e := range f.events(t) {
		if authLimited(e) {
			last = e
		}
	}
	if last.Details["count"] != "2" || last.Details["retry_after"] != "1140" || last.Details["status"] != "429" {
		t.Errorf("the second refusal event's details: got %v, want count 2 (the unrecorded refusal and this one), retry_after 1140, status 429", last.Details)
	}
	// Once the budget affords a failure again, the valid token is served.
	clock.Advance(19 * time.Minute)
	want(t, "20 minutes after the block", listFrom(t, f, attacker, adminToken), ok)
}
