package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
	"github.com/moltgate/moltgate/ratelimit"
)

// budgets are the bursts of the three limits in a test, each at 6 writes a minute (one every
// 10 s once the burst is spent).
type budgets struct{ tenant, caller, token int }

func (b budgets) limits(t *testing.T, clock *testenv.Clock) admin.Limits {
	t.Helper()
	mem := func(burst int) *ratelimit.Memory {
		m, err := ratelimit.NewMemory(ratelimit.MemoryConfig{Limit: ratelimit.Limit{Rate: 6, Per: time.Minute, Burst: burst},
			Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	return admin.Limits{Tenant: mem(b.tenant), Caller: mem(b.caller), AdminToken: mem(b.token)}
}

// answer is what a test looks at in an admin API response.
type answer struct {
	status     int
	retryAfter string
	reason     string
}

// addKey posts a new key for tenant as cred.
func (f *keysFixture) addKey(t *testing.T, cred, tenant string) answer {
	t.Helper()
	f.secrets++
	body, _ := json.Marshal(admin.AddKeyRequest{Provider: "openai", Secret: fmt.Sprintf("sk-test-ratelimit-%06d-abcdefgh", f.secrets)})
	return f.do(t, cred, http.MethodPost, "/v1/tenants/"+tenant+"/keys", body)
}

func (f *keysFixture) do(t *testing.T, cred, method, path string, body []byte) answer {
	t.Helper()
	a, err := f.try(t.Context(), cred, method, path, body)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// try is do for any goroutine: it returns its error.
func (f *keysFixture) try(ctx context.Context, cred, method, path string, body []byte) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, method, f.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Authorization", "Bearer "+cred)
	if method != http.MethodGet && method != http.MethodHead {
		req.Header.Set("Content-Type", "application/json") // the API refuses a change without it
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	var refusal struct{ Reason string }
	_ = json.Unmarshal(data, &refusal)
	return answer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), reason: refusal.Reason}, nil
}

// session is a Clerk session token of an admin of organization org.
func (f *keysFixture) session(sub, org string) string {
	return f.clerk.Mint(clerktest.Claims{Subject: sub, Org: &clerktest.Org{ID: org, Slug: org, Role: "admin"}})
}

// want checks an answer.
func want(t *testing.T, what string, got, want answer) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %+v, want %+v", what, got, want)
	}
}

var (
	created     = answer{status: http.StatusCreated}
	rateLimited = answer{status: http.StatusTooManyRequests, retryAfter: "10", reason: "rate_limited"}
)

// count counts the audit events that match.
func count(events []audit.Event, match func(audit.Event) bool) int {
	n := 0
	for _, e := range events {
		if match(e) {
			n++
		}
	}
	return n
}

func requests(tenant string) func(audit.Event) bool {
	return func(e audit.Event) bool { return e.Type == audit.TypeAdminRequest && e.Tenant == tenant }
}

func refusals(reason, limit string) func(audit.Event) bool {
	return func(e audit.Event) bool {
		return e.Type == audit.TypeAdminDeny && e.Reason == reason && e.Details["limit"] == limit
	}
}

// rateLimitedTotal returns moltgate_admin_rate_limited_total{limit}.
func rateLimitedTotal(t *testing.T, reg *prometheus.Registry, limit string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "moltgate_admin_rate_limited_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "limit" && l.GetValue() == limit {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("moltgate_admin_rate_limited_total{limit=%q} not exported", limit)
	return 0
}

// Issue 15: one tenant's users made 8,746 admin writes in 5 s, all accepted and audited. Admin
// writes now spend a tenant's budget and a caller's, and beyond either are refused with 429
// and Retry-After, before anything is recorded or changed; reads are not limited.
func TestAdminWriteRateLimits(t *testing.T) {
	tests := []struct {
		name    string
		budgets budgets
		run     func(t *testing.T, f *keysFixture, clock *testenv.Clock)
	}{
		{"a tenant's users share the tenant's budget", budgets{tenant: 3, caller: 100, token: 100},
			func(t *testing.T, f *keysFixture, clock *testenv.Clock) {
				alice, bob := f.session("user_alice", "org_a"), f.session("user_bob", "org_a")
				want(t, "alice 1", f.addKey(t, alice, "org_a"), created)
				want(t, "alice 2", f.addKey(t, alice, "org_a"), created)
				want(t, "bob 1", f.addKey(t, bob, "org_a"), created)
				for i := range 10 {
					want(t, fmt.Sprintf("refused write %d", i), f.addKey(t, []string{alice, bob}[i%2], "org_a"), rateLimited)
				}
				// Other tenants, reads, and the admin token (acting for the tenant) go on.
				want(t, "another tenant", f.addKey(t, f.session("user_carol", "org_b"), "org_b"), created)
				want(t, "a read", f.do(t, alice, http.MethodGet, "/v1/tenants/org_a/keys", nil), answer{status: http.StatusOK})
				want(t, "the admin token", f.addKey(t, adminToken, "org_a"), created)

				events := f.events(t)
				// Nothing refused was recorded as a request or made: alice's 2, bob's 1, the token's 1.
				if got := count(events, requests("org_a")); got != 4 {
					t.Errorf("admin.request events of org_a: got %d, want 4", got)
				}
				if list, err := f.client(adminToken).ListKeys(t.Context(), "org_a"); err != nil || len(list) != 4 {
					t.Errorf("org_a's keys: got %d, %v; want 4", len(list), err)
				}
				// Ten refusals, one event: the first of the run.
				if got := count(events, refusals("rate_limited", "tenant")); got != 1 {
					t.Errorf("rate_limited events: got %d, want 1 for the run of 10 refusals", got)
				}
				if got := rateLimitedTotal(t, f.metrics, "tenant"); got != 10 {
					t.Errorf("tenant refusals counted: got %v, want 10", got)
				}
				// One write every 10 s once the burst is spent; a new run of refusals is recorded.
				clock.Advance(10 * time.Second)
				want(t, "after 10 s", f.addKey(t, bob, "org_a"), created)
				want(t, "and again", f.addKey(t, bob, "org_a"), rateLimited)
				if got := count(f.events(t), refusals("rate_limited", "tenant")); got != 2 {
					t.Errorf("rate_limited events after a write between two runs: got %d, want 2", got)
				}
			}},
		{"a caller's budget spans tenants", budgets{tenant: 100, caller: 5, token: 100},
			func(t *testing.T, f *keysFixture, _ *testenv.Clock) {
				// dave is an admin of three organizations, with a session in each.
				for i, org := range []string{"org_c", "org_c", "org_d", "org_d", "org_e"} {
					want(t, fmt.Sprintf("dave's write %d", i), f.addKey(t, f.session("user_dave", org), org), created)
				}
				for i, org := range []string{"org_e", "org_f", "org_c"} {
					want(t, fmt.Sprintf("dave's refused write %d", i), f.addKey(t, f.session("user_dave", org), org), rateLimited)
				}
				want(t, "erin, in dave's tenant", f.addKey(t, f.session("user_erin", "org_e"), "org_e"), created)
				events := f.events(t)
				deny := func(e audit.Event) bool { return refusals("rate_limited", "caller")(e) && e.Actor.ID == "user_dave" }
				if got := count(events, deny); got != 1 {
					t.Errorf("dave's rate_limited events: got %d, want 1", got)
				}
				if got := rateLimitedTotal(t, f.metrics, "caller"); got != 3 {
					t.Errorf("caller refusals counted: got %v, want 3", got)
				}
			}},
		{"the admin token has its own budget, not the tenant's", budgets{tenant: 2, caller: 100, token: 4},
			func(t *testing.T, f *keysFixture, _ *testenv.Clock) {
				for i := range 4 {
					want(t, fmt.Sprintf("token write %d", i), f.addKey(t, adminToken, "org_a"), created)
				}
				want(t, "token write 5", f.addKey(t, adminToken, "org_a"), rateLimited)
				want(t, "a master rotation by the token", f.do(t, adminToken, http.MethodPost, "/v1/keystore/rotate-master", nil), rateLimited)
				alice := f.session("user_alice", "org_a")
				want(t, "alice 1", f.addKey(t, alice, "org_a"), created)
				want(t, "alice 2", f.addKey(t, alice, "org_a"), created)
				want(t, "alice 3", f.addKey(t, alice, "org_a"), rateLimited)
				if got := count(f.events(t), refusals("rate_limited", "caller")); got != 1 {
					t.Errorf("the token's rate_limited events: got %d, want 1", got)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := testenv.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
			f := newKeysFixture(t, withLimits(tt.budgets.limits(t, clock)))
			tt.run(t, f, clock)
		})
	}
}

// A limiter that cannot answer (its Redis is down) refuses the write, 503 with a stable
// reason: the limits are never lifted by an outage. Nothing is recorded as a request or
// changed, the outage is audited once, and reads go on.
func TestAdminWriteLimiterDownFailsClosed(t *testing.T) {
	srv := testenv.Redis(t)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr, DisableIdentity: true, MaxRetries: -1})
	t.Cleanup(func() { rc.Close() })
	tenant, err := ratelimit.NewRedis(ratelimit.RedisConfig{Limit: ratelimit.Limit{Rate: 120, Burst: 30},
		Prefix: "moltgate:ratelimit:admin-tenant:"}, rc)
	if err != nil {
		t.Fatal(err)
	}
	f := newKeysFixture(t, withLimits(admin.Limits{Tenant: tenant}))
	alice := f.session("user_alice", "org_a")
	want(t, "with Redis up", f.addKey(t, alice, "org_a"), created)

	srv.Kill()
	unavailable := answer{status: http.StatusServiceUnavailable, reason: "rate_limit_unavailable"}
	for i := range 3 {
		want(t, fmt.Sprintf("with Redis down, write %d", i), f.addKey(t, alice, "org_a"), unavailable)
	}
	want(t, "a read", f.do(t, alice, http.MethodGet, "/v1/tenants/org_a/keys", nil), answer{status: http.StatusOK})
	events := f.events(t)
	if got := count(events, requests("org_a")); got != 1 {
		t.Errorf("admin.request events: got %d, want 1 (the write made with Redis up)", got)
	}
	if got := count(events, refusals("rate_limit_unavailable", "tenant")); got != 1 {
		t.Errorf("rate_limit_unavailable events: got %d, want 1", got)
	}
	if list, err := f.client(adminToken).ListKeys(t.Context(), "org_a"); err != nil || len(list) != 1 {
		t.Errorf("org_a's keys: got %d, %v; want 1", len(list), err)
	}
}
