package fly_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner/fly"
	"github.com/moltgate/moltgate/provisioner/flytest"
)

// Issue 14: an upgrade rolls the machine to a new pinned image under a lease, waits for it
// to be healthy, reports the old image; a failed upgrade is rolled back with that image.
func TestUpgradeAndRollBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t, flytest.Config{}, nil)
	ctx := t.Context()
	first, err := e.ensureAll(ctx, "acme-10", imageA)
	if err != nil {
		t.Fatal(err)
	}
	up, err := e.d.UpgradeMachine(ctx, "acme-10", fly.MachineSpec{Image: imageB, SecretsVersion: first.SecretsVersion})
	if err != nil {
		t.Fatal(err)
	}
	if up.PreviousImage != imageA || up.Machine.Image != imageB || up.Machine.ID != first.ID || up.Machine.InstanceID == first.InstanceID {
		t.Fatalf("upgrade: got %+v, want %s → %s on machine %s with a new instance", up, imageA, imageB, first.ID)
	}
	assertOneOfEach(t, e, "acme-10", imageB)
	if got := e.fake.Counts().Leases; got != 0 {
		t.Fatalf("leases after the upgrade: got %d, want 0 (released)", got)
	}

	// The same upgrade again changes nothing.
	again, err := e.d.UpgradeMachine(ctx, "acme-10", fly.MachineSpec{Image: imageB, SecretsVersion: first.SecretsVersion})
	if err != nil || again.PreviousImage != imageB || again.Machine.InstanceID != up.Machine.InstanceID {
		t.Fatalf("repeated upgrade: got %+v, %v; want a no-op", again, err)
	}
	if got := e.fake.Calls(flytest.RouteUpdateMachine); got != 1 {
		t.Fatalf("updates: got %d, want 1", got)
	}

	// An image that never starts: the upgrade fails and says what to roll back to.
	e.fake.FailImage(imageC)
	bad, err := e.d.UpgradeMachine(ctx, "acme-10", fly.MachineSpec{Image: imageC, SecretsVersion: first.SecretsVersion})
	if !errors.Is(err, fly.ErrMachineFailed) || bad.PreviousImage != imageB {
		t.Fatalf("failing upgrade: got %+v, %v; want ErrMachineFailed with previous image %s", bad, err, imageB)
	}
	if _, err := e.d.UpgradeMachine(ctx, "acme-10", fly.MachineSpec{Image: bad.PreviousImage, SecretsVersion: first.SecretsVersion}); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	assertOneOfEach(t, e, "acme-10", imageB)
}

func TestUpgradeNeedsAMachine(t *testing.T) {
	t.Parallel()
	e := newEnv(t, flytest.Config{}, nil)
	if _, err := e.d.EnsureApp(t.Context(), "acme-11"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.UpgradeMachine(t.Context(), "acme-11", fly.MachineSpec{Image: imageB}); !errors.Is(err, fly.ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound", err)
	}
	if got := e.fake.Calls(flytest.RouteLaunch); got != 0 {
		t.Fatalf("launches: got %d, want 0", got)
	}
}

// Issue 14: a new or re-activated provider key reaches the running gateway: the secret is
// updated and the machine updated to the new secrets version. A removed key is unset.
func TestNewSecretsReachTheMachine(t *testing.T) {
	t.Parallel()
	e := newEnv(t, flytest.Config{}, nil)
	ctx := t.Context()
	if _, err := e.ensureAll(ctx, "acme-12", imageA); err != nil {
		t.Fatal(err)
	}
	next := tenantSecrets()
	delete(next, "ANTHROPIC_API_KEY")
	next["OPENAI_API_KEY"] = keystore.Secret("sk-LEAKCHECK-openai-77")
	version, err := e.d.SetSecrets(ctx, "acme-12", next)
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.d.EnsureMachine(ctx, "acme-12", fly.MachineSpec{Image: imageA, SecretsVersion: version})
	if err != nil {
		t.Fatal(err)
	}
	vals, have := e.fake.SecretValues("mg-acme-12")
	if have != version || vals["OPENAI_API_KEY"] != "sk-LEAKCHECK-openai-77" || vals["ANTHROPIC_API_KEY"] != "" {
		t.Fatalf("secrets: got names %v at version %d, want OPENAI_API_KEY and no ANTHROPIC_API_KEY at %d", keys(vals), have, version)
	}
	if booted, _ := e.fake.MachineSecretsVersion("mg-acme-12", m.ID); booted != version || m.SecretsVersion != version {
		t.Fatalf("machine secrets version: got %d (driver says %d), want %d", booted, m.SecretsVersion, version)
	}
	if strings.Contains(e.logs.String(), "sk-LEAKCHECK-openai-77") {
		t.Fatal("log carries a secret value")
	}
}

// Issue 14: changes to a machine happen under a lease. Held by another process, the
// driver waits LeaseWait and then says so; once it is released, the rerun proceeds.
func TestLeaseHeldByAnother(t *testing.T) {
	t.Parallel()
	rows := []struct {
		name string
		hold func(t *testing.T, e *env, app, machine string)
		free func(e *env)
	}{
		{
			name: "another holder",
			hold: func(t *testing.T, e *env, app, machine string) {
				if _, err := e.fake.HoldLease(app, machine, time.Minute); err != nil {
					t.Fatal(err)
				}
			},
			free: func(e *env) { e.fake.Advance(2 * time.Minute) },
		},
		{
			name: "injected",
			hold: func(_ *testing.T, e *env, _, _ string) {
				e.fake.Inject(flytest.RouteAcquireLease, flytest.Fault{Kind: flytest.LeaseHeld, Times: -1})
			},
			free: func(e *env) { e.fake.ClearFaults() },
		},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, flytest.Config{}, nil)
			ctx := t.Context()
			m, err := e.ensureAll(ctx, "acme-13", imageA)
			if err != nil {
				t.Fatal(err)
			}
			r.hold(t, e, "mg-acme-13", m.ID)
			if _, err := e.d.UpgradeMachine(ctx, "acme-13", fly.MachineSpec{Image: imageB}); !errors.Is(err, fly.ErrLeaseHeld) {
				t.Fatalf("upgrade under another's lease: got %v, want ErrLeaseHeld", err)
			}
			if got := e.fake.Calls(flytest.RouteUpdateMachine); got != 0 {
				t.Fatalf("updates: got %d, want 0", got)
			}
			r.free(e)
			if _, err := e.d.UpgradeMachine(ctx, "acme-13", fly.MachineSpec{Image: imageB}); err != nil {
				t.Fatal(err)
			}
			assertOneOfEach(t, e, "acme-13", imageB)
		})
	}
}

// The lease is refreshed while the driver waits for a slow boot, and work stops with
// ErrLeaseLost when a refresh is refused.
func TestLeaseRefreshedWhileWorking(t *testing.T) {
	t.Parallel()
	e := newEnv(t, flytest.Config{}, func(c *fly.Config) { c.LeaseTTL = 3 * time.Second })
	ctx := t.Context()
	if _, err := e.ensureAll(ctx, "acme-14", imageA); err != nil {
		t.Fatal(err)
	}
	e.fake.HoldBoot(true)
	done := make(chan error, 1)
	go func() {
		_, err := e.d.UpgradeMachine(ctx, "acme-14", fly.MachineSpec{Image: imageB})
		done <- err
	}()
	base := e.fake.Calls(flytest.RouteAcquireLease)
	waitFor(t, "two lease refreshes", func() bool { return e.fake.Calls(flytest.RouteAcquireLease) >= base+2 })
	e.fake.HoldBoot(false)
	if err := <-done; err != nil {
		t.Fatalf("upgrade with refreshes: %v", err)
	}

	e.fake.HoldBoot(true)
	go func() {
		_, err := e.d.UpgradeMachine(ctx, "acme-14", fly.MachineSpec{Image: imageA})
		done <- err
	}()
	waitFor(t, "the update", func() bool { return e.fake.Calls(flytest.RouteUpdateMachine) == 2 })
	e.fake.Advance(time.Hour) // the lease expires: the next refresh is refused
	if err := <-done; !errors.Is(err, fly.ErrLeaseLost) {
		t.Fatalf("upgrade after the lease expired: got %v, want ErrLeaseLost", err)
	}
}

// Fly's wait ends with 408 after at most 60 s; the driver waits again.
func TestWaitLoopsOn408(t *testing.T) {
	t.Parallel()
	e := newEnv(t, flytest.Config{MaxWait: 20 * time.Millisecond}, nil)
	ctx := t.Context()
	e.fake.HoldBoot(true)
	done := make(chan error, 1)
	go func() {
		_, err := e.ensureAll(ctx, "acme-15", imageA)
		done <- err
	}()
	waitFor(t, "three waits", func() bool { return e.fake.Calls(flytest.RouteWait) >= 3 })
	e.fake.HoldBoot(false)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	assertOneOfEach(t, e, "acme-15", imageA)
}

// A machine that never becomes healthy ends the ensure with ErrMachineFailed after
// StartTimeout, and the driver's checks must pass, not only the state.
func TestNotHealthyWithinStartTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, flytest.Config{MaxWait: 20 * time.Millisecond}, func(c *fly.Config) { c.StartTimeout = 300 * time.Millisecond })
	e.fake.HoldBoot(true)
	if _, err := e.ensureAll(t.Context(), "acme-16", imageA); !errors.Is(err, fly.ErrMachineFailed) {
		t.Fatalf("got %v, want ErrMachineFailed", err)
	}
	e.fake.HoldBoot(false)
	if _, err := e.ensureAll(t.Context(), "acme-16", imageA); err != nil {
		t.Fatal(err)
	}
	assertOneOfEach(t, e, "acme-16", imageA)
}

// A stopped machine is started again by the ensure, under a lease.
func TestEnsureStartsAStoppedMachine(t *testing.T) {
	t.Parallel()
	e := newEnv(t, flytest.Config{}, nil)
	ctx := t.Context()
	m, err := e.ensureAll(ctx, "acme-17", imageA)
	if err != nil {
		t.Fatal(err)
	}
	stopMachine(t, ctx, e, "mg-acme-17", m.ID)
	if _, err := e.ensureAll(ctx, "acme-17", imageA); err != nil {
		t.Fatal(err)
	}
	assertOneOfEach(t, e, "acme-17", imageA)
	if got := e.fake.Calls(flytest.RouteStartMachine); got != 1 {
		t.Fatalf("starts: got %d, want 1", got)
	}
}

// Duplicates a blind retry made before this driver ran are pruned to one.
func TestDuplicatesArePruned(t *testing.T) {
	t.Parallel()
	e := newEnv(t, flytest.Config{}, nil)
	ctx := t.Context()
	if _, err := e.d.EnsureApp(ctx, "acme-18"); err != nil {
		t.Fatal(err)
	}
	c := rawClient(t, e.fake)
	for range 3 {
		createVolume(t, ctx, c, "mg-acme-18")
		assignIP(t, ctx, c, "mg-acme-18", "v6")
		assignIP(t, ctx, c, "mg-acme-18", "shared_v4")
	}
	if _, err := e.ensureAll(ctx, "acme-18", imageA); err != nil {
		t.Fatal(err)
	}
	assertOneOfEach(t, e, "acme-18", imageA)
}
