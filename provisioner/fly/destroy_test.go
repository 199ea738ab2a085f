package fly_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/moltgate/moltgate/provisioner/fly"
	"github.com/moltgate/moltgate/provisioner/flytest"
)

// Issue 14: destroy after a create that stopped halfway, at any step, leaves the fake
// empty; a second destroy is a no-op.
func TestDestroyAfterHalfFinishedCreate(t *testing.T) {
	t.Parallel()
	steps := []struct {
		name string
		run  func(ctx context.Context, e *env, id string) error
	}{
		{"nothing", func(context.Context, *env, string) error { return nil }},
		{"app", func(ctx context.Context, e *env, id string) error {
			_, err := e.d.EnsureApp(ctx, id)
			return err
		}},
		{"volume", func(ctx context.Context, e *env, id string) error {
			_, err := e.d.EnsureVolume(ctx, id)
			return err
		}},
		{"ips", func(ctx context.Context, e *env, id string) error {
			_, err := e.d.EnsureIPs(ctx, id)
			return err
		}},
		{"secrets", func(ctx context.Context, e *env, id string) error {
			_, err := e.d.SetSecrets(ctx, id, tenantSecrets())
			return err
		}},
		{"machine", func(ctx context.Context, e *env, id string) error {
			_, err := e.d.EnsureMachine(ctx, id, fly.MachineSpec{Image: imageA})
			return err
		}},
	}
	for upTo := range steps {
		t.Run("after "+steps[upTo].name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, flytest.Config{}, nil)
			for _, s := range steps[:upTo+1] {
				if err := s.run(t.Context(), e, "acme-6"); err != nil {
					t.Fatalf("%s: %v", s.name, err)
				}
			}
			for range 2 {
				if err := e.d.Destroy(t.Context(), "acme-6"); err != nil {
					t.Fatal(err)
				}
				if got := e.fake.Counts(); got != (flytest.Counts{}) {
					t.Fatalf("after destroy: got %+v, want an empty fake", got)
				}
			}
		})
	}
}

// A machine still booting (killed mid-wait) is destroyed too: kill=true, then waited for.
func TestDestroyBootingMachine(t *testing.T) {
	t.Parallel()
	e := newEnv(t, flytest.Config{}, nil)
	ctx := t.Context()
	if _, err := e.d.EnsureApp(ctx, "acme-7"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.EnsureVolume(ctx, "acme-7"); err != nil {
		t.Fatal(err)
	}
	e.fake.HoldBoot(true)
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := e.d.EnsureMachine(mctx, "acme-7", fly.MachineSpec{Image: imageA})
		done <- err
	}()
	waitFor(t, "a wait for the booting machine", func() bool { return e.fake.Calls(flytest.RouteWait) > 0 })
	cancel() // the process dies mid-wait
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled ensure: got %v, want context.Canceled", err)
	}
	if err := e.d.Destroy(ctx, "acme-7"); err != nil {
		t.Fatal(err)
	}
	if got := e.fake.Counts(); got != (flytest.Counts{}) {
		t.Fatalf("after destroy: got %+v, want an empty fake", got)
	}
}

// A launch whose answer was lost leaves the machine under a lease whose nonce nobody
// knows. Destroy waits LeaseWait for it, then says so; once it expires, destroy finishes.
func TestDestroyWaitsOutALostLease(t *testing.T) {
	t.Parallel()
	e := newEnv(t, flytest.Config{}, nil)
	ctx := t.Context()
	e.fake.Inject(flytest.RouteLaunch, flytest.Fault{Kind: flytest.FailAfter})
	if _, err := e.ensureAll(ctx, "acme-8", imageA); err != nil {
		t.Fatal(err)
	}
	if got := e.fake.Counts().Leases; got != 1 {
		t.Fatalf("leases: got %d, want the lost launch lease", got)
	}
	if err := e.d.Destroy(ctx, "acme-8"); !errors.Is(err, fly.ErrLeaseHeld) {
		t.Fatalf("destroy under a lost lease: got %v, want ErrLeaseHeld", err)
	}
	e.fake.Advance(time.Hour)
	if err := e.d.Destroy(ctx, "acme-8"); err != nil {
		t.Fatal(err)
	}
	if got := e.fake.Counts(); got != (flytest.Counts{}) {
		t.Fatalf("after destroy: got %+v, want an empty fake", got)
	}
}

// Destroy counts a 404 as done at every step, and retries what failed.
func TestDestroyWithFaults(t *testing.T) {
	t.Parallel()
	rows := []struct {
		route flytest.Route
		fault flytest.Fault
	}{
		{flytest.RouteDestroyMachine, flytest.Fault{Kind: flytest.FailAfter}},
		{flytest.RouteDestroyMachine, flytest.Fault{Kind: flytest.RateLimit, RetryAfter: time.Second}},
		{flytest.RouteDeleteVolume, flytest.Fault{Kind: flytest.FailAfter}},
		{flytest.RouteDeleteIP, flytest.Fault{Kind: flytest.StallAfter}},
		{flytest.RouteDeleteApp, flytest.Fault{Kind: flytest.FailAfter, Status: 503}},
		{flytest.RouteWait, flytest.Fault{Kind: flytest.Fail, Status: 408, Times: 2}},
		{flytest.RouteAcquireLease, flytest.Fault{Kind: flytest.LeaseHeld, Times: 2}},
	}
	for _, r := range rows {
		t.Run(string(r.route)+"/"+r.fault.Kind.String(), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, flytest.Config{}, func(c *fly.Config) { c.RequestTimeout = time.Second })
			if _, err := e.ensureAll(t.Context(), "acme-9", imageA); err != nil {
				t.Fatal(err)
			}
			e.fake.Inject(r.route, r.fault)
			if err := e.d.Destroy(t.Context(), "acme-9"); err != nil {
				t.Fatal(err)
			}
			if got := e.fake.Counts(); got != (flytest.Counts{}) {
				t.Fatalf("after destroy: got %+v, want an empty fake", got)
			}
		})
	}
}
