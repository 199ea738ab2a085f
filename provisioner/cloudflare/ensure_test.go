package cloudflare_test

import (
	"errors"
	"testing"
	"time"

	"github.com/moltgate/moltgate/provisioner/cftest"
	"github.com/moltgate/moltgate/provisioner/cloudflare"
)

// writes are the routes that change something.
var writes = []cftest.Route{
	cftest.RouteCreateTunnel, cftest.RoutePutTunnelConfig, cftest.RouteCreateRecord, cftest.RouteUpdateRecord,
	cftest.RouteCreateServiceToken, cftest.RouteCreatePolicy, cftest.RouteUpdatePolicy, cftest.RouteCreateApp,
	cftest.RouteUpdateApp, cftest.RouteDeleteTunnel, cftest.RouteDeleteRecord, cftest.RouteDeleteServiceToken,
	cftest.RouteDeletePolicy, cftest.RouteDeleteApp,
}

// Issue 14: every step is an ensure; run twice, there is still one of each, and the second
// run writes nothing. The service token's secret comes with the first run only.
func TestEnsureTwiceMakesOneOfEach(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	first, err := e.ensureAll(t, t.Context(), "acme-1")
	if err != nil {
		t.Fatal(err)
	}
	writesBefore := map[cftest.Route]int{}
	for _, r := range writes {
		writesBefore[r] = e.fake.Calls(r)
	}
	second, err := e.ensureAll(t, t.Context(), "acme-1")
	if err != nil {
		t.Fatal(err)
	}
	assertOneOfEach(t, e, "acme-1")
	for _, r := range writes {
		if got := e.fake.Calls(r) - writesBefore[r]; got != 0 {
			t.Errorf("second run: %s: got %d calls, want 0", r, got)
		}
	}
	if first.tunnel.ID != second.tunnel.ID || first.record.ID != second.record.ID || first.access != second.access || first.svc.ID != second.svc.ID {
		t.Fatalf("second run: got %+v, want the resources of the first %+v", second, first)
	}
	if st := e.fake.ServiceTokens()[0]; string(first.svc.ClientSecret) != st.ClientSecret || second.svc.ClientSecret != nil {
		t.Fatalf("service token secret: got it on run 1: %v, on run 2: %v; want run 1 only", first.svc.ClientSecret != nil, second.svc.ClientSecret != nil)
	}
	if tok := e.fake.TunnelToken(first.tunnel.ID); string(first.token) != tok || string(second.token) != tok {
		t.Fatal("tunnel token: not the fake's connector token")
	}
	if first.access.AUD == "" || first.access.Domain != "acme-1."+testDomain {
		t.Fatalf("access: got %+v, want an audience tag and domain acme-1.%s", first.access, testDomain)
	}
	if f, err := e.d.Drift(t.Context(), "acme-1"); err != nil || len(f) != 0 {
		t.Fatalf("drift after ensure: got %v, %v; want none", f, err)
	}
}

// Issue 14: a fault at any step, then a rerun of the ensures, ends with exactly one of
// each resource. Faults the driver can resolve by itself (a lost answer to a create found
// by a lookup, 429 with Retry-After, a failed overwrite repeated in place) must not even
// fail the first run.
func TestFaultAtEachStepThenRerunMakesOneOfEach(t *testing.T) {
	t.Parallel()
	type row struct {
		name  string
		route cftest.Route
		fault cftest.Fault
		// firstErr: the error the first run ends with; nil means it must succeed.
		firstErr error
	}
	var rows []row
	for _, route := range []cftest.Route{cftest.RouteCreateTunnel, cftest.RouteCreateRecord, cftest.RouteCreateServiceToken,
		cftest.RouteCreatePolicy, cftest.RouteCreateApp} {
		rows = append(rows,
			row{name: "500 after create", route: route, fault: cftest.Fault{Kind: cftest.FailAfter}},
			row{name: "502 after create", route: route, fault: cftest.Fault{Kind: cftest.FailAfter, Status: 502}},
			row{name: "timeout after create", route: route, fault: cftest.Fault{Kind: cftest.StallAfter}},
			row{name: "timeout before create", route: route, fault: cftest.Fault{Kind: cftest.Stall}, firstErr: cloudflare.ErrUnknownResult},
			row{name: "503 before create", route: route, fault: cftest.Fault{Kind: cftest.Fail, Status: 503}, firstErr: cloudflare.ErrUnknownResult},
			row{name: "429", route: route, fault: cftest.Fault{Kind: cftest.RateLimit, RetryAfter: time.Second}},
		)
	}
	for _, route := range []cftest.Route{cftest.RoutePutTunnelConfig, cftest.RouteGetTunnelToken, cftest.RouteListRecords, cftest.RouteListPolicies} {
		rows = append(rows,
			row{name: "500 after", route: route, fault: cftest.Fault{Kind: cftest.FailAfter}},
			row{name: "timeout", route: route, fault: cftest.Fault{Kind: cftest.Stall}},
			row{name: "429", route: route, fault: cftest.Fault{Kind: cftest.RateLimit}},
		)
	}
	rows = append(rows,
		// The API says the name is taken, but nothing is listed: not the driver's to guess.
		row{name: "tunnel name taken (1013)", route: cftest.RouteCreateTunnel, fault: cftest.Fault{Kind: cftest.Taken}, firstErr: cloudflare.ErrNameTaken},
		row{name: "record exists (81053)", route: cftest.RouteCreateRecord, fault: cftest.Fault{Kind: cftest.Taken}, firstErr: cloudflare.ErrNameTaken},
		row{name: "record exists (81057)", route: cftest.RouteCreateRecord, fault: cftest.Fault{Kind: cftest.Taken, Code: cftest.CodeRecordExists}, firstErr: cloudflare.ErrNameTaken},
		row{name: "hostname on another tunnel (1033)", route: cftest.RouteCreateRecord, fault: cftest.Fault{Kind: cftest.OtherTunnel}, firstErr: cloudflare.ErrDrift},
		row{name: "ingress hostname on another tunnel (1033)", route: cftest.RoutePutTunnelConfig, fault: cftest.Fault{Kind: cftest.OtherTunnel}, firstErr: cloudflare.ErrDrift},
	)
	for _, r := range rows {
		t.Run(r.name+" on "+string(r.route), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, func(c *cloudflare.Config) { c.RequestTimeout = 500 * time.Millisecond })
			e.fake.Inject(r.route, r.fault)
			_, err := e.ensureAll(t, t.Context(), "acme-2")
			switch {
			case r.firstErr == nil && err != nil:
				t.Fatalf("first run: got %v, want success", err)
			case r.firstErr != nil && !errors.Is(err, r.firstErr):
				t.Fatalf("first run: got %v, want %v", err, r.firstErr)
			}
			if _, err := e.ensureAll(t, t.Context(), "acme-2"); err != nil {
				t.Fatalf("rerun: %v", err)
			}
			assertOneOfEach(t, e, "acme-2")
		})
	}
}

// Issue 14: a 429 is waited out for its Retry-After; one longer than MaxRetryAfter, or
// 429s past Attempts, is ErrRateLimited.
func TestRateLimitHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	t.Run("waits", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, nil)
		e.fake.Inject(cftest.RouteCreateTunnel, cftest.Fault{Kind: cftest.RateLimit, RetryAfter: 2 * time.Second})
		start := time.Now()
		if _, err := e.d.EnsureTunnel(t.Context(), "acme-3"); err != nil {
			t.Fatal(err)
		}
		// A lower bound cannot flake: the retry may not come before Retry-After.
		if waited := time.Since(start); waited < 2*time.Second {
			t.Fatalf("retry after %v, want at least the 2s of Retry-After", waited)
		}
		if got := e.fake.Calls(cftest.RouteCreateTunnel); got != 2 {
			t.Fatalf("creates: got %d, want 2", got)
		}
	})
	t.Run("too long", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, func(c *cloudflare.Config) { c.MaxRetryAfter = time.Second })
		e.fake.Inject(cftest.RouteCreateTunnel, cftest.Fault{Kind: cftest.RateLimit, RetryAfter: time.Hour})
		if _, err := e.d.EnsureTunnel(t.Context(), "acme-3"); !errors.Is(err, cloudflare.ErrRateLimited) {
			t.Fatalf("got %v, want ErrRateLimited", err)
		}
		if got := e.fake.Calls(cftest.RouteCreateTunnel); got != 1 {
			t.Fatalf("creates: got %d, want 1", got)
		}
	})
	t.Run("keeps answering 429", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, func(c *cloudflare.Config) { c.Attempts = 2 })
		e.fake.Inject(cftest.RouteListTunnels, cftest.Fault{Kind: cftest.RateLimit, Times: -1})
		if _, err := e.d.EnsureTunnel(t.Context(), "acme-3"); !errors.Is(err, cloudflare.ErrRateLimited) {
			t.Fatalf("got %v, want ErrRateLimited", err)
		}
		if got := e.fake.Calls(cftest.RouteListTunnels); got != 2 {
			t.Fatalf("lists: got %d, want 2 (Attempts)", got)
		}
	})
}

// Issue 14: the client-side limiter spaces requests: with a burst of 1 at 20 per second,
// five calls take at least 200 ms.
func TestClientSideLimiterSpacesRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *cloudflare.Config) { c.RateLimit, c.RatePeriod, c.RateBurst = 20, time.Second, 1 })
	start := time.Now()
	for range 5 {
		if _, err := e.d.Drift(t.Context(), "acme-4"); err != nil { // one tunnel list each
			t.Fatal(err)
		}
	}
	if got := e.fake.TotalCalls(); got != 5 {
		t.Fatalf("calls: got %d, want 5", got)
	}
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Fatalf("5 calls at 20/s with burst 1 took %v, want at least 200ms", waited)
	}
}
