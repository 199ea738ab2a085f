package provisioner_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner"
	"github.com/moltgate/moltgate/provisioner/provisionertest"
	"github.com/moltgate/moltgate/registry"
	"github.com/moltgate/moltgate/store"
)

func spec(id string) provisioner.Spec {
	return provisioner.Spec{ID: id, Tenant: "acme", Owner: "user_alice", Driver: "fake"}
}

// planSteps are the fake driver's plan: the core's token step, the fake cloud's three, the
// core's register step.
var planSteps = []string{"token", "fake.net", "fake.vol", "fake.vm", "register"}

// Issue 14: a pass killed right after any step, at any of its three moments (its pending
// record written; its resource made but its end not recorded; its end recorded), and then
// resumed by another process once the lease expired, ends with exactly one of each resource
// and a registry record whose token the gateway accepts.
func TestCrashAndResumeAfterEveryStep(t *testing.T) {
	t.Parallel()
	provisionertest.EachKillMoment(t, planSteps, func(t *testing.T, step, moment string) {
		e := newEnv(t)
		k := &provisionertest.KillSwitch{}
		p1, _ := e.process(withKill(k))
		if _, _, err := p1.Apply(t.Context(), spec("gw1")); err != nil {
			t.Fatal(err)
		}
		// The dead process's lease holds off the next until it expires.
		p2, _ := e.process()
		provisionertest.KillAndResume(t, k, "ensure "+step+": "+moment, p1, p2, e.clock, 30*time.Second, "gw1")
		e.assertOneOfEach(t, p2, "gw1")
		if e.w.creates != 3 {
			t.Errorf("creates: got %d, want 3 (one per resource, none repeated)", e.w.creates)
		}
	})
}

// Issue 14: faults a cloud API gives (an error before anything is made; a 500 after the
// resource was made; the process stopped, its context cancelled, right after a step acted)
// at every step end, after retries, with one of each resource.
func TestFaultsAtEveryStep(t *testing.T) {
	t.Parallel()
	for _, step := range []string{"fake.net", "fake.vol", "fake.vm"} {
		for _, fault := range []string{"error-before", "error-after", "cancel-after"} {
			t.Run(step+"/"+fault, func(t *testing.T) {
				t.Parallel()
				e := newEnv(t)
				p, d := e.process()
				e.w.inject(step, fault)
				if _, _, err := p.Apply(t.Context(), spec("gw1")); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(t.Context())
				d.cancel = cancel
				err := p.Reconcile(ctx, "gw1")
				cancel()
				if err == nil {
					t.Fatalf("pass with %s at %s succeeded", fault, step)
				}
				st, _ := p.Get("gw1")
				if i := slices.IndexFunc(st.Steps, func(s provisioner.StepStatus) bool { return s.Name == step }); i < 0 ||
					st.Steps[i].State != provisioner.StepPending {
					t.Errorf("after the fault, step %s: %+v, want pending", step, st.Steps)
				}
				provisionertest.Converge(t, p, "gw1")
				e.assertOneOfEach(t, p, "gw1")
			})
		}
	}
}

// Issue 14: two processes racing on the same gateways still make one of each resource, and
// never work on one gateway at the same time.
func TestRacingReconcilers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.w.latency = 2 * time.Millisecond
	p1, _ := e.process()
	p2, _ := e.process()
	ids := []string{"gw1", "gw2", "gw3", "gw4"}
	for _, id := range ids {
		if _, _, err := p1.Apply(t.Context(), spec(id)); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for _, p := range []*provisioner.Provisioner{p1, p2, p1, p2} {
		for _, id := range ids {
			wg.Go(func() {
				for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
					err := p.Reconcile(t.Context(), id)
					if err == nil {
						return
					}
					if !errors.Is(err, provisioner.ErrLeaseHeld) {
						t.Errorf("%s: %v", id, err)
						return
					}
					time.Sleep(time.Millisecond)
				}
				t.Errorf("%s: no pass ended well", id)
			})
		}
	}
	wg.Wait()
	for _, id := range ids {
		e.assertOneOfEach(t, p1, id)
	}
	if e.w.maxActive != 1 {
		t.Errorf("steps running at once on one gateway: got %d, want 1", e.w.maxActive)
	}
	if e.w.creates != 3*len(ids) {
		t.Errorf("creates: got %d, want %d", e.w.creates, 3*len(ids))
	}
}

// Issue 14: destroy removes everything in reverse order and forgets the gateway, even when
// the process dies halfway (after any destroy step, at any moment) or a delete fails.
func TestDestroyAfterCrashHalfway(t *testing.T) {
	t.Parallel()
	provisionertest.EachKillMoment(t, planSteps, func(t *testing.T, step, moment string) {
		e := newEnv(t)
		k := &provisionertest.KillSwitch{}
		p1, _ := e.process(withKill(k))
		provisionertest.Provisioned(t, p1, spec("gw1"))
		if _, err := p1.Destroy(t.Context(), "gw1"); err != nil {
			t.Fatal(err)
		}
		point := "destroy " + step + ": " + moment
		k.Arm(point)
		if err := p1.Reconcile(t.Context(), "gw1"); !errors.Is(err, provisionertest.ErrKilled) {
			t.Fatalf("destroy pass: got %v, want the crash at %q", err, point)
		}
		e.clock.Advance(31 * time.Second)
		p2, _ := e.process()
		e.w.inject("fake.vol", "error-after") // and one delete that fails after deleting
		provisionertest.Converge(t, p2, "gw1")
		e.assertGone(t, p2, "gw1")
		if n := e.w.total(); n != 0 {
			t.Errorf("the fake cloud holds %d resources, want none", n)
		}
	})
}

// Issue 14: rotating the token, killed after any step at any moment and resumed, ends with
// a new token that the gateway holds and the registry sends; the old one opens nothing.
func TestRotateTokenCrashAndResume(t *testing.T) {
	t.Parallel()
	provisionertest.EachKillMoment(t, planSteps, func(t *testing.T, step, moment string) {
		e := newEnv(t)
		k := &provisionertest.KillSwitch{}
		p1, _ := e.process(withKill(k))
		provisionertest.Provisioned(t, p1, spec("gw1"))
		old, _ := e.reg.Lookup("gw1")
		oldTok := string(old.Token)
		if _, err := p1.RotateToken(t.Context(), "gw1"); err != nil {
			t.Fatal(err)
		}
		point := "ensure " + step + ": " + moment
		k.Arm(point)
		err := p1.Reconcile(t.Context(), "gw1")
		if step == "token" || step == "fake.vm" || step == "register" {
			// The steps a rotation changes: the pass reaches them.
			if !errors.Is(err, provisionertest.ErrKilled) {
				t.Fatalf("rotation pass: got %v, want the crash at %q", err, point)
			}
		}
		e.clock.Advance(31 * time.Second)
		p2, _ := e.process()
		provisionertest.Converge(t, p2, "gw1")
		e.assertOneOfEach(t, p2, "gw1")
		now, _ := e.reg.Lookup("gw1")
		if string(now.Token) == oldTok {
			t.Fatal("the registry still sends the old token")
		}
		if _, ok := e.reg.ByToken(oldTok); ok {
			t.Error("the old token still identifies the gateway")
		}
		if st, _ := p2.Get("gw1"); st.TokenGeneration != 2 {
			t.Errorf("token generation %d, want 2", st.TokenGeneration)
		}
	})
}

// Issue 14: between the gateway taking the new token and the registry following (here: a
// process killed right there), requests sent with the registry's token through Transport
// are retried with the other one and succeed, bodies intact; other requests pass untouched.
func TestRotationOverlapTransport(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := &provisionertest.KillSwitch{}
	p, _ := e.process(withKill(k))
	provisionertest.Provisioned(t, p, spec("gw1"))
	if _, err := p.RotateToken(t.Context(), "gw1"); err != nil {
		t.Fatal(err)
	}
	k.Arm("ensure register: pending recorded")
	if err := p.Reconcile(t.Context(), "gw1"); !errors.Is(err, provisionertest.ErrKilled) {
		t.Fatalf("got %v, want the crash before register", err)
	}
	entry, _ := e.reg.Lookup("gw1")
	client := &http.Client{Transport: p.Transport(http.DefaultTransport)}
	do := func(tok, body string) (int, string) {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", entry.Upstream+"/tools/invoke", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := do(string(entry.Token), `{"tool":"sessions_list"}`); code != 200 || body != `{"tool":"sessions_list"}` {
		t.Fatalf("request with the registry's (old) token mid-rotation: %d %q, want 200 and the body echoed", code, body)
	}
	if code, _ := do(strings.Repeat("0", 64), "x"); code != 401 {
		t.Fatalf("a token of neither: %d, want 401 (no retry)", code)
	}
	provisionertest.Converge(t, p, "gw1")
	e.assertOneOfEach(t, p, "gw1")
	// A request that read the registry just before it switched still gets in.
	if code, _ := do(string(entry.Token), "late"); code != 200 {
		t.Fatalf("old token just after the switch: %d, want 200 within the grace", code)
	}
	// Past the grace, the old token is the gateway's business again: refused.
	e.clock.Advance(3 * time.Minute)
	if code, _ := do(string(entry.Token), "stale"); code != 401 {
		t.Fatalf("old token after the grace: %d, want 401", code)
	}
}

// Issue 14: every step that changed something is an audit event, without a secret; a step
// whose event cannot be written is not recorded done, and the next pass redoes it (adopting
// what it made).
func TestStepsAreAudited(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, _ := e.process()
	provisionertest.Provisioned(t, p, spec("gw1"))
	var ensured []string
	for _, ev := range e.audit.all() {
		if ev.Type != audit.TypeProvisionStep || ev.Gateway != "gw1" || ev.Tenant != "acme" || ev.Outcome != "success" {
			t.Errorf("event %+v", ev)
		}
		ensured = append(ensured, ev.Details["step"])
	}
	if !slices.Equal(ensured, planSteps) {
		t.Errorf("audited steps %v, want %v", ensured, planSteps)
	}
	// A pass with nothing to change writes no event.
	n := len(e.audit.all())
	provisionertest.Converge(t, p, "gw1")
	if got := len(e.audit.all()); got != n {
		t.Errorf("a pass that changed nothing wrote %d events", got-n)
	}
	if _, err := p.RotateToken(t.Context(), "gw1"); err != nil {
		t.Fatal(err)
	}
	e.audit.fail.Store(true)
	if err := p.Reconcile(t.Context(), "gw1"); err == nil {
		t.Fatal("a pass whose steps could not be audited succeeded")
	}
	e.audit.fail.Store(false)
	provisionertest.Converge(t, p, "gw1")
	e.assertOneOfEach(t, p, "gw1")
	entry, _ := e.reg.Lookup("gw1")
	for _, ev := range e.audit.all() {
		if s := fmt.Sprint(ev); strings.Contains(s, string(entry.Token)) {
			t.Fatalf("an event carries the gateway token: %s", s)
		}
	}
	if _, err := p.Destroy(t.Context(), "gw1"); err != nil {
		t.Fatal(err)
	}
	provisionertest.Converge(t, p, "gw1")
	evs := e.audit.all()
	if last := evs[len(evs)-1]; last.Action != "provision.forget" {
		t.Errorf("last event %q, want provision.forget", last.Action)
	}
}

// Issue 14: what Apply accepts and refuses.
func TestApply(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, _ := e.process()
	s, changed, err := p.Apply(t.Context(), spec("gw1"))
	if err != nil || !changed || s.Generation != 1 || s.TokenGeneration != 1 {
		t.Fatalf("first apply: %+v %v %v", s, changed, err)
	}
	if st, _ := p.Get("gw1"); st.Phase != provisioner.PhasePending || len(st.Steps) != len(planSteps) {
		t.Errorf("before any pass: %+v", st)
	}
	if _, changed, err := p.Apply(t.Context(), spec("gw1")); err != nil || changed {
		t.Fatalf("same spec again: changed %v %v, want no change", changed, err)
	}
	other := spec("gw1")
	other.Tenant = "evil"
	if _, _, err := p.Apply(t.Context(), other); !errors.Is(err, provisioner.ErrExists) {
		t.Fatalf("another tenant's apply of gw1: %v, want ErrExists", err)
	}
	if _, _, err := p.Apply(t.Context(), provisioner.Spec{ID: "Bad_ID", Tenant: "acme", Owner: "u", Driver: "nope"}); !errors.Is(err, provisioner.ErrInvalid) ||
		!strings.Contains(err.Error(), "id") || !strings.Contains(err.Error(), "driver") {
		t.Fatalf("bad spec: %v, want ErrInvalid naming id and driver", err)
	}
	if _, err := e.reg.Create(t.Context(), registry.Gateway{ID: "added", Tenant: "other", Owner: "u", Upstream: "http://127.0.0.1:1"},
		strings.Repeat("ab", 32)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.Apply(t.Context(), spec("added")); !errors.Is(err, provisioner.ErrExists) {
		t.Fatalf("apply over a gateway registered with gateway add: %v, want ErrExists", err)
	}
	if _, err := p.RotateToken(t.Context(), "nope"); !errors.Is(err, provisioner.ErrNotFound) {
		t.Fatalf("rotate unknown: %v", err)
	}
	if _, err := p.Destroy(t.Context(), "gw1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.Apply(t.Context(), spec("gw1")); !errors.Is(err, provisioner.ErrDestroying) {
		t.Fatalf("apply while destroying: %v, want ErrDestroying", err)
	}
	if _, err := p.RotateToken(t.Context(), "gw1"); !errors.Is(err, provisioner.ErrDestroying) {
		t.Fatalf("rotate while destroying: %v, want ErrDestroying", err)
	}
	provisionertest.Converge(t, p, "gw1")
	e.assertGone(t, p, "gw1")
	if _, _, err := p.Apply(t.Context(), spec("gw1")); err != nil {
		t.Fatalf("apply once gone: %v", err)
	}
}

// Issue 14: a pass whose lease is taken from it stops, and writes nothing after.
func TestLeaseLostStopsThePass(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, _ := e.process(func(c *provisioner.Config, _ *provisioner.Deps) { c.LeaseTTL = 150 * time.Millisecond })
	if _, _, err := p.Apply(t.Context(), spec("gw1")); err != nil {
		t.Fatal(err)
	}
	e.w.inject("fake.vol", "hang")
	done := make(chan error, 1)
	go func() { done <- p.Reconcile(t.Context(), "gw1") }()
	deadline := time.Now().Add(10 * time.Second)
	for e.w.running("gw1") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the pass never reached fake.vol")
		}
		time.Sleep(time.Millisecond)
	}
	// Another holder takes the lease (as if this one had stalled past its expiry).
	for {
		raw, err := e.kv.Get("provisioner.leases", "gw1")
		if err != nil {
			t.Fatal(err)
		}
		err = e.kv.Swap("provisioner.leases", "gw1", raw, []byte(`{"holder":"thief","expires":"2999-01-01T00:00:00Z"}`))
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrConflict) { // else refreshed meanwhile: take it again
			t.Fatal(err)
		}
	}
	before, _ := e.kv.Get("provisioner.status", "gw1")
	select {
	case err := <-done:
		if !errors.Is(err, provisioner.ErrLeaseLost) {
			t.Fatalf("got %v, want ErrLeaseLost", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the pass went on without its lease")
	}
	after, _ := e.kv.Get("provisioner.status", "gw1")
	if string(before) != string(after) {
		t.Errorf("the pass wrote its status after losing the lease")
	}
	if n := e.w.count("gw1")["vol"]; n != 0 {
		t.Errorf("the pass acted after losing its lease: %d volumes", n)
	}
	if raw, _ := e.kv.Get("provisioner.leases", "gw1"); !strings.Contains(string(raw), "thief") {
		t.Errorf("the pass released a lease it no longer held: %s", raw)
	}
}

// Issue 11: provisioning is fenced. A pass stalled past its lease's expiry, whose lease
// another process took over, writes nothing when it wakes: the new holder stamped its greater
// fencing token into the status at its start, so the stalled pass's next write is refused as
// fenced (ErrLeaseLost: it stops, rather than a conflict it would retry), and the status
// keeps the new holder's token.
func TestFencedStatusAfterTakeover(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	old, _ := e.process()
	taker, _ := e.process()
	if _, _, err := old.Apply(t.Context(), spec("gw1")); err != nil {
		t.Fatal(err)
	}
	provisionertest.Converge(t, old, "gw1")
	e.w.mu.Lock()
	e.w.resources = nil // the world lost the gateway: the next passes build it again
	e.w.mu.Unlock()
	e.w.inject("fake.vol", "wait", "wait")
	stalled := make(chan error, 1)
	go func() { stalled <- old.Reconcile(t.Context(), "gw1") }()
	testenv.WaitUntil(t, "the first pass stalled in fake.vol", 10*time.Second, func() bool { return e.w.running("gw1") == 1 })
	e.clock.Advance(time.Hour) // its lease expires (the renewals are 10 s of real time away)
	took := make(chan error, 1)
	go func() { took <- taker.Reconcile(t.Context(), "gw1") }()
	testenv.WaitUntil(t, "the second pass stalled in fake.vol", 10*time.Second, func() bool { return e.w.running("gw1") == 2 })
	stamped, err := e.kv.Get("provisioner.status", "gw1")
	if err != nil {
		t.Fatal(err)
	}
	close(e.w.release)
	if err := <-stalled; !errors.Is(err, provisioner.ErrLeaseLost) {
		t.Fatalf("the stalled pass after the takeover: got %v, want ErrLeaseLost", err)
	}
	if err := <-took; err != nil {
		t.Fatalf("the pass that took over: %v", err)
	}
	var first, last struct{ Fence uint64 }
	json.Unmarshal(stamped, &first)
	raw, _ := e.kv.Get("provisioner.status", "gw1")
	json.Unmarshal(raw, &last)
	if first.Fence == 0 || last.Fence != first.Fence {
		t.Errorf("status fencing tokens: %d at the takeover, %d at the end; want the taker's throughout", first.Fence, last.Fence)
	}
}

// Issue 14: Run passes over every gateway at start, and a tenant's gateways again when told
// its keys changed (WakeTenant), not others'.
func TestRunAndWakeTenant(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, _ := e.process(func(c *provisioner.Config, _ *provisioner.Deps) { c.ResyncInterval = time.Hour })
	other := spec("gw2")
	other.Tenant = "globex"
	for _, s := range []provisioner.Spec{spec("gw1"), other} {
		if _, _, err := p.Apply(t.Context(), s); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	ready := func(id string) func() bool {
		return func() bool { st, _ := p.Get(id); return st.Phase == provisioner.PhaseReady && e.w.count(id)["vm"] == 1 }
	}
	testenv.WaitUntil(t, "both gateways ready", 10*time.Second, func() bool { return ready("gw1")() && ready("gw2")() })
	// Both lose their vm behind the provisioner's back; only acme's keys "change".
	for _, id := range []string{"gw1", "gw2"} {
		e.w.mu.Lock()
		e.w.resources = slices.DeleteFunc(e.w.resources, func(r *resource) bool { return r.name == "vm-"+id })
		e.w.mu.Unlock()
	}
	p.WakeTenant("acme")
	testenv.WaitUntil(t, "acme's gateway repaired", 10*time.Second, ready("gw1"))
	if n := e.w.count("gw2")["vm"]; n != 0 {
		t.Errorf("globex's gateway was passed over too (%d vm)", n)
	}
}

// Issue 14: provisioning many gateways at once is bounded by Config.Workers: Run never
// works on more gateways at a time, and every one ends ready.
func TestRunBoundsWorkers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.w.latency = 20 * time.Millisecond
	p, _ := e.process(func(c *provisioner.Config, _ *provisioner.Deps) { c.Workers = 3 })
	var ids []string
	for i := range 12 {
		ids = append(ids, fmt.Sprintf("gw%d", i))
		if _, _, err := p.Apply(t.Context(), spec(ids[i])); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testenv.WaitUntil(t, "every gateway ready", 30*time.Second, func() bool {
		for _, id := range ids {
			if st, _ := p.Get(id); st.Phase != provisioner.PhaseReady {
				return false
			}
		}
		return true
	})
	e.w.mu.Lock()
	defer e.w.mu.Unlock()
	if e.w.maxBusy > 3 || e.w.maxBusy < 1 {
		t.Errorf("gateways worked on at once: got %d, want 1 to 3 (Workers)", e.w.maxBusy)
	}
}

// Issue 14: key rotation reaches the gateway tokens the provisioner keeps sealed (it is a
// keystore.Target): resealed under the new keys they open to the same tokens, and a
// provisioner on the new keys finds every gateway as it was.
func TestResealKeepsTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, _ := e.process()
	provisionertest.Provisioned(t, p, spec("gw1"))
	if _, err := p.RotateToken(t.Context(), "gw1"); err != nil {
		t.Fatal(err)
	}
	k := &provisionertest.KillSwitch{}
	p1, _ := e.process(withKill(k))
	e.clock.Advance(time.Minute)
	k.Arm("ensure register: pending recorded") // mid-rotation: two tokens sealed
	if err := p1.Reconcile(t.Context(), "gw1"); !errors.Is(err, provisionertest.ErrKilled) {
		t.Fatalf("got %v, want the kill before register", err)
	}
	ring2, _ := keystore.NewKeyring(2, bytes.Repeat([]byte{8}, keystore.KeySize))
	ks2 := keystore.New(ring2)
	resealed := 0
	fn := func(tenant, record, purpose string, sealed []byte) ([]byte, bool, error) {
		if h, err := keystore.ParseHeader(sealed); err == nil && h.Master == 2 {
			return sealed, false, nil
		}
		plain, err := e.ks.Open(tenant, record, purpose, sealed)
		if err != nil {
			return nil, false, err
		}
		out, err := ks2.Seal(tenant, record, purpose, plain)
		resealed++
		return out, err == nil, err
	}
	p.Quiesce()
	if err := p.Reseal(t.Context(), fn); err != nil || resealed != 2 {
		t.Fatalf("reseal: %v, %d tokens resealed; want 2 (the rotation's old and new)", err, resealed)
	}
	if err := p.Reseal(t.Context(), fn); err != nil || resealed != 2 {
		t.Fatalf("second reseal: %v, %d resealed; want none more", err, resealed)
	}
	e.clock.Advance(time.Minute)
	p2, _ := e.process(func(_ *provisioner.Config, d *provisioner.Deps) { d.Sealer = ks2 })
	provisionertest.Converge(t, p2, "gw1")
	e.assertOneOfEach(t, p2, "gw1")
}
