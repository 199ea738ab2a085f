package fly_test

import (
	"errors"
	"testing"
	"time"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner/fly"
	"github.com/moltgate/moltgate/provisioner/flytest"
)

// Issue 14: every step is an ensure; run twice, there is still one of each, and the second
// run creates and changes nothing.
func TestEnsureTwiceMakesOneOfEach(t *testing.T) {
	t.Parallel()
	e := newEnv(t, flytest.Config{}, nil)
	first, err := e.ensureAll(t.Context(), "acme-1", imageA)
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.ensureAll(t.Context(), "acme-1", imageA)
	if err != nil {
		t.Fatal(err)
	}
	assertOneOfEach(t, e, "acme-1", imageA)
	if first.ID != second.ID || first.InstanceID != second.InstanceID {
		t.Fatalf("second run: got machine %s/%s, want %s/%s unchanged", second.ID, second.InstanceID, first.ID, first.InstanceID)
	}
	for _, r := range []flytest.Route{flytest.RouteCreateApp, flytest.RouteCreateVolume, flytest.RouteLaunch} {
		if got := e.fake.Calls(r); got != 1 {
			t.Errorf("%s: got %d calls, want 1", r, got)
		}
	}
	if got := e.fake.Calls(flytest.RouteAssignIP); got != 2 {
		t.Errorf("ip assignments: got %d calls, want 2", got)
	}
	if got := e.fake.Calls(flytest.RouteUpdateMachine); got != 0 {
		t.Errorf("machine updates: got %d, want 0", got)
	}
	if got := e.fake.AppCounts("mg-acme-1").Leases; got != 0 {
		t.Errorf("leases left held: got %d, want 0", got)
	}
}

// Issue 14: a fault at any step, then a rerun of the ensures, ends with exactly one of
// each resource. Faults the driver can resolve by itself (a lost answer to a create found
// by a lookup, 429 with Retry-After, a wait's 408) must not even fail the first run.
func TestFaultAtEachStepThenRerunMakesOneOfEach(t *testing.T) {
	t.Parallel()
	type row struct {
		name  string
		route flytest.Route
		fault flytest.Fault
		// firstErr: the error the first run ends with; nil means it must succeed.
		firstErr error
		// calls, when set, is how many requests the route must have had after both runs.
		calls int
	}
	failAfter := flytest.Fault{Kind: flytest.FailAfter}
	badGatewayAfter := flytest.Fault{Kind: flytest.FailAfter, Status: 502}
	unavailableAfter := flytest.Fault{Kind: flytest.FailAfter, Status: 503}
	stallAfter := flytest.Fault{Kind: flytest.StallAfter}
	stall := flytest.Fault{Kind: flytest.Stall}
	fail := flytest.Fault{Kind: flytest.Fail}
	limited := flytest.Fault{Kind: flytest.RateLimit, RetryAfter: time.Second}
	var rows []row
	for _, route := range []flytest.Route{flytest.RouteCreateApp, flytest.RouteCreateVolume, flytest.RouteAssignIP, flytest.RouteLaunch} {
		rows = append(rows,
			row{name: "500 after create", route: route, fault: failAfter, calls: callsFor(route)},
			// fly.NewHTTPClient retries 502 and 503 for every method: the driver must stop it
			// for creates, or a second volume or IP appears.
			row{name: "502 after create", route: route, fault: badGatewayAfter, calls: callsFor(route)},
			row{name: "503 after create", route: route, fault: unavailableAfter, calls: callsFor(route)},
			row{name: "timeout after create", route: route, fault: stallAfter, calls: callsFor(route)},
			row{name: "timeout before create", route: route, fault: stall, firstErr: fly.ErrUnknownResult},
			row{name: "500 before create", route: route, fault: fail, firstErr: fly.ErrUnknownResult},
			row{name: "429", route: route, fault: limited, calls: callsFor(route) + 1},
		)
	}
	// Setting secrets is idempotent, so it is repeated in place: two calls in the first
	// run, one in the rerun.
	rows = append(rows,
		row{name: "500 after set", route: flytest.RouteUpdateSecrets, fault: failAfter, calls: 3},
		row{name: "503 after set", route: flytest.RouteUpdateSecrets, fault: unavailableAfter, calls: 3},
		row{name: "timeout after set", route: flytest.RouteUpdateSecrets, fault: stallAfter, calls: 3},
		row{name: "timeout before set", route: flytest.RouteUpdateSecrets, fault: stall, calls: 3},
		row{name: "429", route: flytest.RouteUpdateSecrets, fault: limited, calls: 3},
		row{name: "down", route: flytest.RouteUpdateSecrets, fault: flytest.Fault{Kind: flytest.Fail, Times: -1}, firstErr: errAny},
		row{name: "408 three times", route: flytest.RouteWait, fault: flytest.Fault{Kind: flytest.Fail, Status: 408, Times: 3}},
		row{name: "500", route: flytest.RouteWait, fault: fail},
		row{name: "429", route: flytest.RouteWait, fault: limited},
		row{name: "timeout", route: flytest.RouteWait, fault: stall},
		row{name: "500", route: flytest.RouteGetApp, fault: fail},
		row{name: "503 (retried by the SDK)", route: flytest.RouteListVolumes, fault: flytest.Fault{Kind: flytest.Fail, Status: 503}},
		row{name: "429", route: flytest.RouteListIPs, fault: limited},
		row{name: "timeout", route: flytest.RouteListMachines, fault: stall},
		row{name: "lists down", route: flytest.RouteListMachines, fault: flytest.Fault{Kind: flytest.Fail, Times: -1}, firstErr: errAny},
	)
	for _, r := range rows {
		t.Run(string(r.route)+"/"+r.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, flytest.Config{}, func(c *fly.Config) { c.RequestTimeout = time.Second })
			e.fake.Inject(r.route, r.fault)
			_, err := e.ensureAll(t.Context(), "acme-2", imageA)
			assertNoSecret(t, "error", errString(err))
			switch {
			case r.firstErr == nil && err != nil:
				t.Fatalf("first run: got %v, want success", err)
			case r.firstErr == errAny && err == nil, r.firstErr != nil && r.firstErr != errAny && !errors.Is(err, r.firstErr):
				t.Fatalf("first run: got %v, want %v", err, r.firstErr)
			}
			e.fake.ClearFaults()
			if _, err := e.ensureAll(t.Context(), "acme-2", imageA); err != nil {
				t.Fatalf("rerun: %v", err)
			}
			assertOneOfEach(t, e, "acme-2", imageA)
			if r.calls != 0 {
				if got := e.fake.Calls(r.route); got != r.calls {
					t.Fatalf("%s: got %d requests, want %d", r.route, got, r.calls)
				}
			}
		})
	}
}

// Issue 14: two processes racing on one gateway still make one of each: the machine's
// name is unique, and of volumes and IPs made twice the oldest is kept and the others
// released.
func TestTwoDriversRaceOnOneGateway(t *testing.T) {
	t.Parallel()
	e := newEnv(t, flytest.Config{}, nil)
	other, err := fly.New(fly.Config{
		Org: testOrg, Region: "ams", Token: keystore.Secret(testToken), BaseURL: e.fake.URL, LeaseWait: 5 * time.Second,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	racer := &env{fake: e.fake, d: other}
	errs := make(chan error, 2)
	for _, x := range []*env{e, racer} {
		go func() {
			_, err := x.ensureAll(t.Context(), "acme-19", imageA)
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("racing ensure: %v", err)
		}
	}
	if _, err := e.ensureAll(t.Context(), "acme-19", imageA); err != nil {
		t.Fatal(err)
	}
	assertOneOfEach(t, e, "acme-19", imageA)
}

// errAny marks a row whose first run must fail, with any error.
var errAny = errors.New("any error")

// callsFor is how many requests a create route gets when its first create's answer is lost
// and no create is repeated.
func callsFor(route flytest.Route) int {
	if route == flytest.RouteAssignIP {
		return 2 // one v6, one shared v4
	}
	return 1
}
