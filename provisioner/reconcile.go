package provisioner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/store"
)

// pass is one reconcile pass over one gateway: what it read, and what it will write.
type pass struct {
	spec    Spec
	specRaw []byte
	rec     *record
	raw     []byte // the status bytes last read or written: the compare of the next swap
	dirty   bool   // rec differs from raw in something worth writing at the end
	token   keystore.Secret
	driver  string
	// unlock, if set, is called after the next status write (the token step's seal barrier).
	unlock func()
	// fence is the fencing token of the pass's lease.
	fence uint64
}

// Reconcile runs one pass over gateway id: it takes the gateway's lease (ErrLeaseHeld if
// another process or pass has it), brings the world one pass closer to the spec, and
// returns the first error. A nil error means the gateway is as its spec asks (or forgotten).
func (p *Provisioner) Reconcile(ctx context.Context, id string) error {
	p.busyMu.Lock()
	if p.busy[id] {
		p.busyMu.Unlock()
		return fmt.Errorf("%w: %q (this process)", ErrLeaseHeld, id)
	}
	p.busy[id] = true
	p.busyMu.Unlock()
	defer func() {
		p.busyMu.Lock()
		delete(p.busy, id)
		p.busyMu.Unlock()
	}()

	l, err := p.acquire(id)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	stop := l.keep(ctx, cancel)
	start := time.Now()
	driver, err := p.pass(ctx, id, l.Token())
	stop()
	cancel(nil)
	var k killed
	if !errors.As(err, &k) { // a dead process releases nothing
		l.release(p)
	}
	if driver != "" {
		p.m.observeReconcile(driver, err, time.Since(start))
	}
	return err
}

func (p *Provisioner) pass(ctx context.Context, id string, fence uint64) (string, error) {
	spec, specRaw, err := p.loadSpec(id)
	if errors.Is(err, ErrNotFound) {
		return "", nil // forgotten, or never asked for
	}
	if err != nil {
		return "", err
	}
	rec, raw, err := p.loadRecord(id)
	if err != nil {
		return spec.Driver, err
	}
	st := &pass{spec: spec, specRaw: specRaw, rec: rec, raw: raw, driver: spec.Driver, fence: fence}
	if err := p.stampFence(ctx, st); err != nil {
		return spec.Driver, err
	}
	defer func() {
		clear(st.token)
		if st.unlock != nil {
			st.unlock()
		}
	}()
	plan, ok := p.plans[spec.Driver]
	if !ok {
		err := fmt.Errorf("provisioner: driver %q is not configured", spec.Driver)
		return spec.Driver, errors.Join(err, p.failPass(ctx, st, err))
	}
	rec.Tenant = spec.Tenant
	if st.token, err = p.openToken(id, spec.Tenant, rec.Token); err != nil && !spec.Absent {
		return spec.Driver, errors.Join(err, p.failPass(ctx, st, err))
	} // a destroy needs no token: one that no longer opens must not keep a gateway alive
	if spec.Absent {
		return spec.Driver, p.destroyPass(ctx, st, plan)
	}
	return spec.Driver, p.ensurePass(ctx, st, plan)
}

func (p *Provisioner) ensurePass(ctx context.Context, st *pass, plan []Step) error {
	for _, step := range plan {
		ss := st.rec.step(step.Name())
		if ss != nil && ss.State == StepDone && ss.Op == OpEnsure {
			ok, err := step.Check(ctx, p.run(st, step, false))
			if err != nil {
				return p.failStep(ctx, st, step, OpEnsure, fmt.Errorf("check: %w", err))
			}
			if ok {
				continue
			}
		}
		if err := p.runStep(ctx, st, step, OpEnsure); err != nil {
			return err
		}
	}
	// The world is as the spec asks: a rotation is over once every step holds the new token.
	if st.rec.PrevToken != nil {
		st.rec.PrevToken = nil
		st.dirty = true
	}
	if st.rec.ObservedGeneration != st.spec.Generation || st.rec.Error != "" || st.rec.Failures != 0 {
		st.rec.ObservedGeneration, st.rec.Error, st.rec.Failures = st.spec.Generation, "", 0
		st.dirty = true
	}
	if !st.dirty {
		return nil
	}
	return p.save(ctx, st)
}

// destroyPass runs every step's Destroy in reverse order, each recorded like an ensure,
// then forgets the gateway. Every step runs, recorded or not: what an earlier pass made is
// found by its deterministic name, so nothing is left behind because a record was lost.
func (p *Provisioner) destroyPass(ctx context.Context, st *pass, plan []Step) error {
	for _, step := range slices.Backward(plan) {
		if err := p.runStep(ctx, st, step, OpDestroy); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	id := st.spec.ID
	// The status goes first: a spec without status is destroyed again (harmlessly) by the
	// next pass, while a status without spec would never be looked at.
	if st.raw != nil {
		if err := p.swapStatus(st, nil); err != nil {
			return err
		}
	}
	if err := p.deps.KV.Swap(specBucket, id, st.specRaw, nil); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("%w: spec of %q changed while it was destroyed", ErrConflict, id)
		}
		return fmt.Errorf("provisioner: forget %q: %w", id, err)
	}
	p.ovl.forget(id)
	p.emit(ctx, st, "provision.forget", "", OpDestroy, nil, 0)
	p.deps.Logger.LogAttrs(ctx, slog.LevelInfo, "provisioner: gateway destroyed and forgotten", slog.String("gateway", id))
	return nil
}

// runStep records step as pending, runs op, and records its end: done (or, for a destroy,
// the record removed) after its audit event is written, or the error.
func (p *Provisioner) runStep(ctx context.Context, st *pass, step Step, op string) error {
	name := step.Name()
	ss := st.rec.setStep(name)
	pending := ss.State == StepPending
	if ss.Op != op || ss.State == StepDone {
		ss.Attempts = 0
	}
	ss.State, ss.Op, ss.Error = StepPending, op, ""
	ss.Attempts++
	ss.Started, ss.Finished = p.deps.Now().UTC(), time.Time{}
	attempt := ss.Attempts
	if err := p.save(ctx, st); err != nil {
		return err
	}
	if err := p.crashAt(op + " " + name + ": pending recorded"); err != nil {
		return err
	}
	r := p.run(st, step, pending)
	var err error
	if op == OpEnsure {
		err = step.Ensure(ctx, r)
	} else {
		err = step.Destroy(ctx, r)
	}
	clearKeys(r.keys)
	if cerr := p.crashAt(op + " " + name + ": acted"); cerr != nil {
		return cerr
	}
	if err != nil {
		return p.failStep(ctx, st, step, op, err)
	}
	if ctx.Err() != nil {
		// Stopped as the step ended: it stays pending, and the next pass finds by lookup
		// what it made.
		return context.Cause(ctx)
	}
	if err := p.emit(ctx, st, "provision."+op, name, op, nil, attempt); err != nil {
		return p.failStep(ctx, st, step, op, err)
	}
	if op == OpDestroy {
		st.rec.dropStep(name)
	} else {
		ss := st.rec.setStep(name)
		ss.State, ss.Attempts, ss.Finished = StepDone, attempt, p.deps.Now().UTC()
		st.rec.repaired(name, ss.Finished)
	}
	if err := p.save(ctx, st); err != nil {
		return err
	}
	p.m.step(st.driver, name, op, nil)
	return p.crashAt(op + " " + name + ": done recorded")
}

func (p *Provisioner) run(st *pass, step Step, pending bool) *Run {
	return &Run{Spec: st.spec, Pending: pending, p: p, st: st, step: step.Name(),
		Logger: p.deps.Logger.With(slog.String("gateway", st.spec.ID), slog.String("step", step.Name()))}
}

// failStep records err as step's failure (when the pass may still write) and returns it.
func (p *Provisioner) failStep(ctx context.Context, st *pass, step Step, op string, err error) error {
	name := step.Name()
	err = fmt.Errorf("%s %s: %w", op, name, err)
	p.m.step(st.driver, name, op, err)
	if ctx.Err() != nil {
		// Stopped (shutdown, lost lease): the step stays pending for the next pass, which
		// resolves it by lookup. Nothing is written, nothing is claimed.
		return context.Cause(ctx)
	}
	ss := st.rec.setStep(name)
	ss.Error = err.Error()
	ss.Finished = p.deps.Now().UTC()
	p.emit(ctx, st, "provision."+op, name, op, err, ss.Attempts)
	return errors.Join(err, p.failPass(ctx, st, err))
}

// failPass records err as the pass's failure in the status, and logs it: the caller
// returns err to the work queue, which only schedules the retry. It returns a write error.
func (p *Provisioner) failPass(ctx context.Context, st *pass, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	st.rec.Error = err.Error()
	st.rec.Failures++
	p.deps.Logger.LogAttrs(ctx, slog.LevelWarn, "provisioner: pass failed; retrying later",
		slog.String("gateway", st.spec.ID), slog.Int("failures", st.rec.Failures), slog.Any("err", err))
	return p.save(ctx, st)
}

// save writes the pass's record, a compare-and-swap against the bytes it last read or
// wrote. Once the pass's context is done (lease lost, shutdown) it writes nothing.
func (p *Provisioner) save(ctx context.Context, st *pass) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	st.rec.Updated = p.deps.Now().UTC()
	b, err := json.Marshal(st.rec)
	if err != nil {
		return fmt.Errorf("provisioner: encode status: %w", err)
	}
	if err := p.swapStatus(st, b); err != nil {
		return err
	}
	st.dirty = false
	p.ovl.note(p, st)
	return nil
}

// stampFence writes the pass's fencing token into the gateway's status before the pass does
// anything: from then on a pass still running under the lease this one took over (stalled
// past its expiry) finds the status changed and a greater token there, and stops writing.
// A status not written yet is left to the pass's first write (a compare-and-swap against
// nothing, which only one pass wins).
func (p *Provisioner) stampFence(ctx context.Context, st *pass) error {
	switch {
	case st.raw == nil || st.fence == 0 || st.rec.Fence == st.fence:
		return nil
	case st.rec.Fence > st.fence:
		return fmt.Errorf("%w: %q: the status carries fencing token %d, the lease %d", ErrLeaseLost, st.spec.ID, st.rec.Fence, st.fence)
	}
	st.rec.Fence = st.fence
	return p.save(ctx, st)
}

func (p *Provisioner) swapStatus(st *pass, b []byte) error {
	err := p.deps.KV.Swap(statusBucket, st.spec.ID, st.raw, b)
	if st.unlock != nil {
		st.unlock()
		st.unlock = nil
	}
	switch {
	case errors.Is(err, store.ErrConflict):
		// Refused by fencing: another pass took the lease over and stamped its token.
		if cur, _, lerr := p.loadRecord(st.spec.ID); lerr == nil && cur.Fence > st.fence {
			return fmt.Errorf("%w: %q: the status carries fencing token %d, the lease %d", ErrLeaseLost, st.spec.ID, cur.Fence, st.fence)
		}
		return fmt.Errorf("%w: %q", ErrConflict, st.spec.ID)
	case err != nil:
		return fmt.Errorf("provisioner: write status %q: %w", st.spec.ID, err)
	}
	st.raw = b
	return nil
}

// emit writes the provision.step event of a step's end (step "" for the gateway itself).
func (p *Provisioner) emit(ctx context.Context, st *pass, action, step, op string, err error, attempt int) error {
	ev := audit.Event{Type: audit.TypeProvisionStep, Actor: audit.Actor{Kind: "system", ID: "provisioner"},
		Tenant: st.spec.Tenant, Gateway: st.spec.ID, Action: action, Outcome: "success",
		Details: map[string]string{"driver": st.driver, "op": op, "holder": p.cfg.Holder,
			"generation": strconv.FormatUint(st.spec.Generation, 10)}}
	if step != "" {
		ev.Details["step"] = step
		ev.Details["attempt"] = strconv.Itoa(attempt)
	}
	if err != nil {
		// The reason is a code; the error text stays in the status and the log.
		ev.Outcome, ev.Reason = "error", reasonOf(err)
	}
	if eerr := p.deps.Audit.Emit(context.WithoutCancel(ctx), ev); eerr != nil {
		return fmt.Errorf("provisioner: audit: %w", eerr)
	}
	return nil
}

func reasonOf(err error) string {
	switch {
	case errors.Is(err, ErrLeaseLost):
		return "lease_lost"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, ErrConflict):
		return "conflict"
	}
	return "step_failed"
}

// killed is what Config.KillAt makes a pass return.
type killed struct{ error }

func (k killed) Unwrap() error { return k.error }

func (p *Provisioner) crashAt(point string) error {
	if p.cfg.KillAt == nil {
		return nil
	}
	if err := p.cfg.KillAt(point); err != nil {
		return killed{fmt.Errorf("killed at %s: %w", point, err)}
	}
	return nil
}
