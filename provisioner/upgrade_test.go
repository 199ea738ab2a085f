package provisioner_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	flyapi "github.com/superfly/fly-go"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner"
	"github.com/moltgate/moltgate/provisioner/fly"
	"github.com/moltgate/moltgate/provisioner/flytest"
	"github.com/moltgate/moltgate/provisioner/provisionertest"
)

var _ provisioner.Upgrader = (*fly.Driver)(nil)

const (
	flyImageA = "registry.example.test/moltgate/gateway:2026.9.6@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	flyImageB = "registry.example.test/moltgate/gateway:2026.9.7@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// flyDriver is a provisioner driver on the real fly package, pointed at flytest through
// the real flaps client: one step makes a gateway's app, volume, IPs, secrets and machine on
// the spec's image (the cloud driver's own steps are not needed to test upgrades), and
// Upgrade is fly.Driver's.
type flyDriver struct{ *fly.Driver }

func (d flyDriver) Steps() []provisioner.Step { return []provisioner.Step{flyGateway{d.Driver}} }

type flyGateway struct{ d *fly.Driver }

func (flyGateway) Name() string { return "test.fly" }

func (s flyGateway) Check(ctx context.Context, r *provisioner.Run) (bool, error) {
	m, err := s.d.Machine(ctx, r.Spec.ID)
	if errors.Is(err, fly.ErrNotFound) {
		return false, nil
	}
	return err == nil && m.Image == r.Spec.Image, err
}

func (s flyGateway) Ensure(ctx context.Context, r *provisioner.Run) error {
	id := r.Spec.ID
	if _, err := s.d.EnsureApp(ctx, id); err != nil {
		return err
	}
	if _, err := s.d.EnsureVolume(ctx, id); err != nil {
		return err
	}
	if _, err := s.d.EnsureIPs(ctx, id); err != nil {
		return err
	}
	v, err := s.d.SetSecrets(ctx, id, map[string]keystore.Secret{fly.SecretGatewayToken: r.Token()})
	if err != nil {
		return err
	}
	if _, err := s.d.EnsureMachine(ctx, id, fly.MachineSpec{Image: r.Spec.Image, SecretsVersion: v}); err != nil {
		return err
	}
	r.SetUpstream("http://" + id + ".gateway.test:18789")
	return nil
}

func (s flyGateway) Destroy(ctx context.Context, r *provisioner.Run) error {
	return s.d.Destroy(ctx, r.Spec.ID)
}

// flyEnv is env (store, registry, keystore, clock) with a Machines API fake and a fly
// driver whose machines have a health check.
type flyEnv struct {
	*env
	fake *flytest.Server
	d    *fly.Driver
}

func newFlyEnv(t *testing.T) *flyEnv {
	t.Helper()
	fake, err := flytest.New(flytest.Config{Org: "moltgate", Token: "fo1_upgrade-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	d, err := fly.New(fly.Config{Org: "moltgate", Region: "ams", Token: keystore.Secret("fo1_upgrade-test"), BaseURL: fake.URL,
		Checks:         map[string]flyapi.MachineCheck{"readyz": {Type: flyapi.Pointer("http"), Port: flyapi.Pointer(18789), HTTPPath: flyapi.Pointer("/readyz")}},
		RequestTimeout: 5 * time.Second, WaitTimeout: time.Second, StartTimeout: 2 * time.Second, LeaseWait: time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &flyEnv{env: newEnv(t), fake: fake, d: d}
}

// process is a provisioner ("process") with the fly driver, on the shared store.
func (e *flyEnv) process(mod ...func(*provisioner.Config, *provisioner.Deps)) *provisioner.Provisioner {
	e.t.Helper()
	p, _ := e.env.process(append([]func(*provisioner.Config, *provisioner.Deps){func(c *provisioner.Config, _ *provisioner.Deps) {
		c.Drivers, c.DefaultDriver = map[string]provisioner.Driver{"fly": flyDriver{e.d}}, "fly"
	}}, mod...)...)
	return p
}

// gateways provisions gateways gw-1 … gw-n on image.
func (e *flyEnv) gateways(p *provisioner.Provisioner, n int, image string) []string {
	e.t.Helper()
	var ids []string
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("gw-%d", i)
		provisionertest.Provisioned(e.t, p, provisioner.Spec{ID: id, Tenant: "acme", Owner: "user_alice", Driver: "fly", Image: image})
		ids = append(ids, id)
	}
	return ids
}

// machine is gateway id's one machine in the fake.
func (e *flyEnv) machine(t *testing.T, id string) flyapi.Machine {
	t.Helper()
	ms := e.fake.Machines("mg-" + id)
	if len(ms) != 1 {
		t.Fatalf("machines of %s: got %d, want 1", id, len(ms))
	}
	return ms[0]
}

// assertOn checks that gateway id has one machine, on image, and that its status says so.
func (e *flyEnv) assertOn(t *testing.T, p *provisioner.Provisioner, id, image string, state provisioner.UpgradeState) {
	t.Helper()
	if m := e.machine(t, id); m.Config.Image != image {
		t.Errorf("machine of %s: got image %s, want %s", id, m.Config.Image, image)
	}
	st, err := p.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if st.Spec.Image != image || st.Image != image {
		t.Errorf("%s: spec image %s, status image %s; want %s", id, st.Spec.Image, st.Image, image)
	}
	if got := upgradeState(st); got != state {
		t.Errorf("%s: upgrade state %q, want %q", id, got, state)
	}
}

func upgradeState(st provisioner.Status) provisioner.UpgradeState {
	if st.Upgrade == nil {
		return ""
	}
	return st.Upgrade.State
}

// Issue 14: `gateway upgrade ID --image REF` rolls the machine to the new pinned image and
// waits for its health check; the upgrade is recorded with the image to roll back to, and
// the reconciler's next pass finds nothing to change.
func TestUpgradeWaitsForHealth(t *testing.T) {
	t.Parallel()
	e := newFlyEnv(t)
	p := e.process()
	e.gateways(p, 1, flyImageA)
	before := e.machine(t, "gw-1")

	st, err := p.Upgrade(t.Context(), "gw-1", flyImageB)
	if err != nil {
		t.Fatal(err)
	}
	if st.Upgrade == nil || st.Upgrade.Image != flyImageB || st.Upgrade.Previous != flyImageA || st.Upgrade.Error != "" {
		t.Fatalf("upgrade record: got %+v, want %s from %s", st.Upgrade, flyImageB, flyImageA)
	}
	e.assertOn(t, p, "gw-1", flyImageB, provisioner.UpgradeDone)
	after := e.machine(t, "gw-1")
	if after.ID != before.ID || after.InstanceID == before.InstanceID || after.State != "started" ||
		len(after.Checks) != 1 || after.Checks[0].Status != flyapi.Passing {
		t.Fatalf("machine: got %+v, want %s updated, started and passing", after, before.ID)
	}
	updates := e.fake.Calls(flytest.RouteUpdateMachine)

	// The spec holds the new image: a pass finds the gateway as asked and changes nothing.
	provisionertest.Converge(t, p, "gw-1")
	if got := e.fake.Calls(flytest.RouteUpdateMachine); got != updates {
		t.Fatalf("updates after a pass: got %d, want %d", got, updates)
	}
	// Asked again, it is done already.
	if _, err := p.Upgrade(t.Context(), "gw-1", flyImageB); err != nil || e.fake.Calls(flytest.RouteUpdateMachine) != updates {
		t.Fatalf("repeated upgrade: %v, %d updates; want nil, %d", err, e.fake.Calls(flytest.RouteUpdateMachine), updates)
	}
	if st, err := p.Get("gw-1"); err != nil || st.Phase != provisioner.PhaseReady {
		t.Fatalf("phase after the pass: %q (%v), want ready", st.Phase, err)
	}
}

// Issue 14: bad input gets a clear error and changes nothing: an unpinned image, a gateway
// not provisioned, a gateway whose driver runs no image (local).
func TestUpgradeRefusesBadInput(t *testing.T) {
	t.Parallel()
	e := newFlyEnv(t)
	p := e.process(func(c *provisioner.Config, _ *provisioner.Deps) {
		c.Drivers["fake"] = &fakeDriver{w: e.w}
	})
	e.gateways(p, 1, flyImageA)
	provisionertest.Provisioned(t, p, provisioner.Spec{ID: "local-1", Tenant: "acme", Owner: "user_alice", Driver: "fake"})
	before, _ := p.Get("gw-1")

	rows := []struct {
		id, image string
		want      error
		say       string
	}{
		{"gw-1", "registry.example.test/moltgate/gateway:latest", provisioner.ErrInvalid, "not pinned by digest"},
		{"gw-1", "registry.example.test/moltgate/gateway@sha256:abc", provisioner.ErrInvalid, "not pinned by digest"},
		{"nope", flyImageB, provisioner.ErrNotFound, "not provisioned"},
		{"local-1", flyImageB, provisioner.ErrInvalid, "upgrade applies to fly"},
	}
	for _, r := range rows {
		_, err := p.Upgrade(t.Context(), r.id, r.image)
		if !errors.Is(err, r.want) || !strings.Contains(err.Error(), r.say) {
			t.Errorf("Upgrade(%s, %s): got %v, want %v saying %q", r.id, r.image, err, r.want, r.say)
		}
	}
	if _, err := p.Rollback(t.Context(), "gw-1"); !errors.Is(err, provisioner.ErrInvalid) {
		t.Errorf("Rollback of a gateway never upgraded: got %v, want ErrInvalid", err)
	}
	after, _ := p.Get("gw-1")
	if after.Spec.Generation != before.Spec.Generation || after.Upgrade != nil || e.fake.Calls(flytest.RouteUpdateMachine) != 0 {
		t.Fatalf("something changed: generation %d → %d, upgrade %+v, %d updates",
			before.Spec.Generation, after.Spec.Generation, after.Upgrade, e.fake.Calls(flytest.RouteUpdateMachine))
	}
}

// Issue 14: an image whose health check fails is a failed upgrade; Rollback returns the
// gateway to the previous digest, recorded before the upgrade began.
func TestUpgradeFailsThenRollsBack(t *testing.T) {
	t.Parallel()
	e := newFlyEnv(t)
	p := e.process()
	e.gateways(p, 1, flyImageA)
	e.fake.FailChecks(flyImageB)

	st, err := p.Upgrade(t.Context(), "gw-1", flyImageB)
	if !errors.Is(err, provisioner.ErrUpgradeFailed) || !errors.Is(err, fly.ErrMachineFailed) {
		t.Fatalf("upgrade to a failing image: got %v, want ErrUpgradeFailed from fly.ErrMachineFailed", err)
	}
	if upgradeState(st) != provisioner.UpgradeFailed || st.Upgrade.Previous != flyImageA || st.Image != "" || st.Upgrade.Error == "" {
		t.Fatalf("status: got image %q, upgrade %+v; want failed, previous %s, an error, image unknown", st.Image, st.Upgrade, flyImageA)
	}
	// Another upgrade asked for after the failure still rolls back to the last healthy image.
	flyImageC := strings.Replace(flyImageB, "bbbb", "cccc", 1)
	e.fake.FailChecks(flyImageC)
	if st, err = p.Upgrade(t.Context(), "gw-1", flyImageC); !errors.Is(err, provisioner.ErrUpgradeFailed) || st.Upgrade.Previous != flyImageA {
		t.Fatalf("a second failing upgrade: got %+v, %v; want ErrUpgradeFailed, previous %s", st.Upgrade, err, flyImageA)
	}
	st, err = p.Rollback(t.Context(), "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	e.assertOn(t, p, "gw-1", flyImageA, provisioner.UpgradeRolledBack)
	if st.Upgrade.Error == "" {
		t.Fatalf("rolled back: the upgrade's failure is not kept: %+v", st.Upgrade)
	}
}

// The fleet's gateways gw-1 … gw-5 and their machines' instances before it ran: a gateway
// "not touched" keeps its instance.
func instances(t *testing.T, e *flyEnv, ids []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, id := range ids {
		out[id] = e.machine(t, id).InstanceID
	}
	return out
}

// untouched checks that gateways ids still run flyImageA on the instance they had before.
func (e *flyEnv) untouched(t *testing.T, p *provisioner.Provisioner, before map[string]string, ids []string) {
	t.Helper()
	for _, id := range ids {
		e.assertOn(t, p, id, flyImageA, "")
		if got := e.machine(t, id).InstanceID; got != before[id] {
			t.Errorf("%s was touched: instance %s → %s", id, before[id], got)
		}
	}
}

// Issue 14: a canary whose health check fails halts the fleet upgrade; the canary is
// rolled back to its previous digest, and no other gateway is touched.
func TestFleetCanaryFailureHalts(t *testing.T) {
	t.Parallel()
	e := newFlyEnv(t)
	p := e.process()
	ids := e.gateways(p, 5, flyImageA)
	before := instances(t, e, ids)
	e.fake.FailChecks(flyImageB, "mg-gw-1")

	f, err := p.UpgradeFleet(t.Context(), provisioner.FleetSpec{Image: flyImageB, Canary: 1, Batch: 2}, nil)
	if !errors.Is(err, provisioner.ErrUpgradeFailed) {
		t.Fatalf("got %v, want ErrUpgradeFailed", err)
	}
	want := [][]string{{"gw-1"}, {"gw-2", "gw-3"}, {"gw-4", "gw-5"}}
	if fmt.Sprint(f.Batches) != fmt.Sprint(want) || f.State != provisioner.FleetHalted || f.Current != 0 || fmt.Sprint(f.Failed) != "[gw-1]" {
		t.Fatalf("fleet: got %+v, want batches %v halted at the canary gw-1", f, want)
	}
	e.assertOn(t, p, "gw-1", flyImageA, provisioner.UpgradeRolledBack)
	e.untouched(t, p, before, ids[1:])
	if got, err := p.CurrentFleet(); err != nil || got.State != provisioner.FleetHalted {
		t.Fatalf("recorded fleet: %+v, %v; want halted", got, err)
	}
}

// Issue 14: a failure in batch 2 halts the fleet and rolls that batch back; batch 1 stays
// upgraded, batch 3 is not touched.
func TestFleetBatchFailureRollsBackTheBatch(t *testing.T) {
	t.Parallel()
	e := newFlyEnv(t)
	reg := prometheus.NewRegistry()
	p := e.process(func(_ *provisioner.Config, d *provisioner.Deps) { d.Metrics = reg })
	ids := e.gateways(p, 5, flyImageA)
	before := instances(t, e, ids)
	e.fake.FailChecks(flyImageB, "mg-gw-3")
	var seen []string
	progress := func(fp provisioner.FleetProgress) {
		seen = append(seen, fmt.Sprintf("%d:%s:%s", fp.Batch, fp.Gateway, upgradeState(fp.Status)))
	}

	f, err := p.UpgradeFleet(t.Context(), provisioner.FleetSpec{Image: flyImageB, Canary: 1, Batch: 2}, progress)
	if !errors.Is(err, provisioner.ErrUpgradeFailed) || !strings.Contains(err.Error(), "gw-3") {
		t.Fatalf("got %v, want ErrUpgradeFailed naming gw-3", err)
	}
	if f.State != provisioner.FleetHalted || f.Current != 1 || fmt.Sprint(f.Failed) != "[gw-3]" {
		t.Fatalf("fleet: got %+v, want halted in batch 2 by gw-3", f)
	}
	e.assertOn(t, p, "gw-1", flyImageB, provisioner.UpgradeDone)
	e.assertOn(t, p, "gw-2", flyImageA, provisioner.UpgradeRolledBack)
	e.assertOn(t, p, "gw-3", flyImageA, provisioner.UpgradeRolledBack)
	e.untouched(t, p, before, ids[3:])
	metrics := `
# HELP moltgate_provisioner_upgrades_total Gateway image upgrades and rollbacks finished, by driver, op (upgrade, rollback) and outcome (success, unhealthy).
# TYPE moltgate_provisioner_upgrades_total counter
moltgate_provisioner_upgrades_total{driver="fly",op="rollback",outcome="success"} 2
moltgate_provisioner_upgrades_total{driver="fly",op="upgrade",outcome="success"} 2
moltgate_provisioner_upgrades_total{driver="fly",op="upgrade",outcome="unhealthy"} 1
# HELP moltgate_provisioner_fleet_upgrade_batches The last fleet upgrade's batches by position: done (upgraded), current, waiting.
# TYPE moltgate_provisioner_fleet_upgrade_batches gauge
moltgate_provisioner_fleet_upgrade_batches{position="current"} 1
moltgate_provisioner_fleet_upgrade_batches{position="done"} 1
moltgate_provisioner_fleet_upgrade_batches{position="waiting"} 1
# HELP moltgate_provisioner_fleet_upgrade_state 1 for the last fleet upgrade's state (running, rolling_back, halted, done), 0 for the others.
# TYPE moltgate_provisioner_fleet_upgrade_state gauge
moltgate_provisioner_fleet_upgrade_state{state="done"} 0
moltgate_provisioner_fleet_upgrade_state{state="halted"} 1
moltgate_provisioner_fleet_upgrade_state{state="rolling_back"} 0
moltgate_provisioner_fleet_upgrade_state{state="running"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(metrics), "moltgate_provisioner_upgrades_total",
		"moltgate_provisioner_fleet_upgrade_batches", "moltgate_provisioner_fleet_upgrade_state"); err != nil {
		t.Error(err)
	}
	for _, want := range []string{"0:gw-1:upgraded", "1:gw-3:failed", "1:gw-2:rolled_back", "1:gw-3:rolled_back"} {
		if !strings.Contains(strings.Join(seen, " "), want) {
			t.Errorf("progress: got %v, want %s among it", seen, want)
		}
	}
}

// Issue 14: a process that dies in the middle of a fleet upgrade (batch 2 recorded, its
// gateway not yet rolled) is resumed by another running the same upgrade: every gateway
// ends on the new image with one machine, the batch already done is not rolled again.
func TestFleetResumesAfterCrash(t *testing.T) {
	t.Parallel()
	e := newFlyEnv(t)
	kill := &provisionertest.KillSwitch{}
	p := e.process(withKill(kill))
	ids := e.gateways(p, 5, flyImageA)
	kill.Arm("upgrade gw-3: recorded")

	fs := provisioner.FleetSpec{Image: flyImageB, Canary: 1, Batch: 2}
	if _, err := p.UpgradeFleet(t.Context(), fs, nil); !errors.Is(err, provisionertest.ErrKilled) {
		t.Fatalf("got %v, want the kill", err)
	}
	if st, _ := p.Get("gw-3"); upgradeState(st) != provisioner.UpgradeRunning || st.Upgrade.Previous != flyImageA {
		t.Fatalf("gw-3 after the crash: got %+v, want upgrading from %s", st.Upgrade, flyImageA)
	}
	if f, _ := p.CurrentFleet(); f.State != provisioner.FleetRunning || f.Current != 1 {
		t.Fatalf("fleet after the crash: got %+v, want running at batch 2", f)
	}
	canary := e.machine(t, "gw-1").InstanceID

	// The dead process's leases expire; another process runs the same command.
	e.clock.Advance(time.Hour)
	p2 := e.process()
	other := strings.Replace(flyImageA, "aaaa", "cccc", 1)
	if _, err := p2.UpgradeFleet(t.Context(), provisioner.FleetSpec{Image: other}, nil); !errors.Is(err, provisioner.ErrExists) {
		t.Fatalf("a fleet upgrade to another image while one is unfinished: got %v, want ErrExists", err)
	}
	f, err := p2.UpgradeFleet(t.Context(), provisioner.FleetSpec{Image: flyImageB, Canary: 3, Batch: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.State != provisioner.FleetDone || len(f.Batches) != 3 {
		t.Fatalf("fleet: got %+v, want done with the recorded 3 batches", f)
	}
	for _, id := range ids {
		e.assertOn(t, p2, id, flyImageB, provisioner.UpgradeDone)
		if c := e.fake.AppCounts("mg-" + id); c.Machines != 1 || c.Volumes != 1 {
			t.Errorf("%s: got %+v, want one machine and one volume", id, c)
		}
	}
	if got := e.machine(t, "gw-1").InstanceID; got != canary {
		t.Errorf("the canary was rolled again: instance %s → %s", canary, got)
	}
	// A done fleet upgrade is replaced; with every gateway on the image, there is nothing to do.
	f, err = p2.UpgradeFleet(t.Context(), provisioner.FleetSpec{Image: flyImageB}, nil)
	if err != nil || f.State != provisioner.FleetDone || len(f.Batches) != 0 {
		t.Fatalf("a second fleet upgrade to the same image: got %+v, %v; want done with no batch", f, err)
	}
}

// Issue 14: an error that says nothing about the image (here the machine's lease, held by
// someone else) stops the fleet upgrade without a halt or a rollback; it stays recorded, and
// the same upgrade again, once the lease is free, finishes it.
func TestFleetStopsWithoutRollbackOnOtherErrors(t *testing.T) {
	t.Parallel()
	e := newFlyEnv(t)
	p := e.process()
	ids := e.gateways(p, 3, flyImageA)
	before := instances(t, e, ids)
	if _, err := e.fake.HoldLease("mg-gw-2", e.machine(t, "gw-2").ID, time.Hour); err != nil {
		t.Fatal(err)
	}

	fs := provisioner.FleetSpec{Image: flyImageB, Batch: 1}
	f, err := p.UpgradeFleet(t.Context(), fs, nil)
	if !errors.Is(err, fly.ErrLeaseHeld) || errors.Is(err, provisioner.ErrUpgradeFailed) {
		t.Fatalf("got %v, want fly.ErrLeaseHeld and no failed upgrade", err)
	}
	if f.State != provisioner.FleetRunning || f.Current != 1 {
		t.Fatalf("fleet: got %+v, want running at batch 2", f)
	}
	e.assertOn(t, p, "gw-1", flyImageB, provisioner.UpgradeDone)
	if st, _ := p.Get("gw-2"); upgradeState(st) != provisioner.UpgradeRunning || e.machine(t, "gw-2").Config.Image != flyImageA {
		t.Fatalf("gw-2: got %+v on %s, want upgrading, still on the old image", st.Upgrade, e.machine(t, "gw-2").Config.Image)
	}
	e.untouched(t, p, before, ids[2:])

	e.fake.Advance(2 * time.Hour) // the other holder's lease expires
	if f, err = p.UpgradeFleet(t.Context(), fs, nil); err != nil || f.State != provisioner.FleetDone {
		t.Fatalf("again: got %+v, %v; want done", f, err)
	}
	for _, id := range ids {
		e.assertOn(t, p, id, flyImageB, provisioner.UpgradeDone)
	}
}

// Issue 14: a process that dies right after the machine was rolled, before the upgrade's
// end was recorded, is resumed by the same upgrade from another process: recorded done,
// the machine not rolled again. One that dies before rolling leaves the spec on the new
// image, and a reconciler pass finishes the job: the status then knows the image.
func TestUpgradeResumesAfterCrash(t *testing.T) {
	t.Parallel()
	e := newFlyEnv(t)
	kill := &provisionertest.KillSwitch{}
	p := e.process(withKill(kill))
	e.gateways(p, 2, flyImageA)

	kill.Arm("upgrade gw-1: acted")
	if _, err := p.Upgrade(t.Context(), "gw-1", flyImageB); !errors.Is(err, provisionertest.ErrKilled) {
		t.Fatalf("got %v, want the kill", err)
	}
	if st, _ := p.Get("gw-1"); upgradeState(st) != provisioner.UpgradeRunning || st.Image != "" {
		t.Fatalf("after the crash: got %+v, image %q; want upgrading, image unknown", st.Upgrade, st.Image)
	}
	updates := e.fake.Calls(flytest.RouteUpdateMachine)
	e.clock.Advance(time.Hour)
	p2 := e.process()
	if _, err := p2.Upgrade(t.Context(), "gw-1", flyImageB); err != nil {
		t.Fatal(err)
	}
	e.assertOn(t, p2, "gw-1", flyImageB, provisioner.UpgradeDone)
	if got := e.fake.Calls(flytest.RouteUpdateMachine); got != updates {
		t.Fatalf("updates: got %d, want %d (the machine was on the image already)", got, updates)
	}

	kill.Arm("upgrade gw-2: recorded")
	if _, err := p.Upgrade(t.Context(), "gw-2", flyImageB); !errors.Is(err, provisionertest.ErrKilled) {
		t.Fatalf("got %v, want the kill", err)
	}
	e.clock.Advance(time.Hour)
	provisionertest.Converge(t, p2, "gw-2")
	if m := e.machine(t, "gw-2"); m.Config.Image != flyImageB {
		t.Fatalf("after a pass: machine on %s, want %s", m.Config.Image, flyImageB)
	}
	if st, _ := p2.Get("gw-2"); st.Image != flyImageB || upgradeState(st) != provisioner.UpgradeRunning {
		t.Fatalf("status after a pass: image %q, upgrade %+v; want %s, still recorded upgrading", st.Image, st.Upgrade, flyImageB)
	}
}
