package provisioner

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/moltgate/moltgate/provisioner/retry"
)

// Upgrader is implemented by a driver whose gateways run an image that can be rolled to
// another (fly). The local driver runs the pinned OpenClaw install and has no image to roll.
type Upgrader interface {
	// Upgrade rolls gateway id's running workload to image and waits until it is healthy
	// (its health checks pass). It returns the image it ran before, also when it fails. An
	// error wrapping ErrUnhealthy says the workload did not become healthy on image; any
	// other (a rate limit, a lease held, no machine yet) says nothing about the image.
	Upgrade(ctx context.Context, id, image string) (previous string, err error)
}

var (
	// ErrUnhealthy is what an Upgrader wraps when the workload did not become healthy.
	ErrUnhealthy = errors.New("provisioner: not healthy")
	// ErrUpgradeFailed: the gateway did not become healthy on the new image (or, in a
	// rollback, on its previous one).
	ErrUpgradeFailed = errors.New("provisioner: upgrade failed")
)

// UpgradeState is where a gateway's last image upgrade stands.
type UpgradeState string

// States of an upgrade.
const (
	// UpgradeRunning: recorded, the workload is being rolled (or a crash interrupted it:
	// running the upgrade again resumes it).
	UpgradeRunning UpgradeState = "upgrading"
	// UpgradeDone: the gateway is healthy on Image.
	UpgradeDone UpgradeState = "upgraded"
	// UpgradeFailed: the gateway was not healthy on Image; Rollback returns it to Previous.
	UpgradeFailed UpgradeState = "failed"
	// UpgradeRollingBack: being rolled back to Previous (Error says why, if that failed).
	UpgradeRollingBack UpgradeState = "rolling_back"
	// UpgradeRolledBack: healthy on Previous again; Error is what made the upgrade fail.
	UpgradeRolledBack UpgradeState = "rolled_back"
)

// UpgradeStatus is a gateway's last image upgrade, kept in its status record. It is written
// before the workload is touched, so a crash leaves it saying what was under way, and what
// to roll back to.
type UpgradeStatus struct {
	// Image is the image asked for, pinned by digest.
	Image string `json:"image"`
	// Previous is the image the gateway ran healthy before: the rollback's target.
	Previous string       `json:"previous,omitempty"`
	State    UpgradeState `json:"state"`
	Error    string       `json:"error,omitempty"`
	Started  time.Time    `json:"started,omitzero"`
	Finished time.Time    `json:"finished,omitzero"`
}

func (u *UpgradeStatus) clone() *UpgradeStatus {
	if u == nil {
		return nil
	}
	c := *u
	return &c
}

// pinnedRE: a reference that names its content by a sha256 digest, with or without a tag.
var pinnedRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._/:-]*@sha256:[a-f0-9]{64}$`)

// PinnedImage refuses (ErrInvalid) an image reference not pinned by digest: a tag can be
// moved to other content behind moltgate's back, and a rollback needs the exact previous
// content.
func PinnedImage(image string) error {
	if !pinnedRE.MatchString(image) {
		return invalidError{fmt.Errorf("image: %q is not pinned by digest: want repository[:tag]@sha256:<64 hex digits>", image)}
	}
	return nil
}

// Digest is the sha256 digest of a pinned image reference, or "".
func Digest(image string) string {
	if _, d, ok := strings.Cut(image, "@"); ok {
		return d
	}
	return ""
}

// Upgrade rolls gateway id to image, pinned by digest, and waits until it is healthy. It
// records the upgrade (image, and the image to roll back to) in the gateway's status, and
// the image in its spec, before it touches the gateway, under the gateway's lease (it waits
// for a pass in progress to end). Run again after a crash, it resumes; for an image the
// gateway already runs, it returns at once. A health check that fails is ErrUpgradeFailed,
// the upgrade recorded failed: Rollback undoes it. A driver without images (local) is
// refused with ErrInvalid, changing nothing.
func (p *Provisioner) Upgrade(ctx context.Context, id, image string) (Status, error) {
	if err := PinnedImage(image); err != nil {
		return Status{}, err
	}
	u, err := p.upgrader(id, image)
	if err != nil {
		return Status{}, err
	}
	err = p.underLease(ctx, id, func(ctx context.Context, st *pass) error {
		up := st.rec.Upgrade
		switch {
		case up != nil && up.Image == image && up.State == UpgradeDone && st.spec.Image == image:
			return nil
		case up == nil || up.Image != image || up.State != UpgradeRunning:
			prev := st.spec.Image
			if up != nil && up.State != UpgradeDone && up.State != UpgradeRolledBack {
				prev = up.Previous // the last image known healthy, not a failed one
			}
			st.rec.Upgrade = &UpgradeStatus{Image: image, Previous: prev, State: UpgradeRunning, Started: p.deps.Now().UTC()}
			if err := p.save(ctx, st); err != nil {
				return err
			}
		}
		return p.roll(ctx, st, u, image, "upgrade", UpgradeDone, UpgradeFailed)
	})
	return p.upgradeResult(id, err)
}

// Rollback returns gateway id to the image it ran before its last upgrade, and waits until
// it is healthy: the undoing of a failed upgrade (or of one that passed its checks and is
// not wanted). It is recorded like an upgrade; a gateway never upgraded, or already rolled
// back, is left as it is.
func (p *Provisioner) Rollback(ctx context.Context, id string) (Status, error) {
	u, err := p.upgrader(id, "")
	if err != nil {
		return Status{}, err
	}
	err = p.underLease(ctx, id, func(ctx context.Context, st *pass) error {
		up := st.rec.Upgrade
		if up == nil || up.Previous == "" {
			return invalidError{fmt.Errorf("gateway %q: no upgrade to roll back", id)}
		}
		if up.State == UpgradeRolledBack {
			return nil
		}
		if up.State != UpgradeRollingBack {
			up.State, up.Started, up.Finished = UpgradeRollingBack, p.deps.Now().UTC(), time.Time{}
			if err := p.save(ctx, st); err != nil {
				return err
			}
		}
		return p.roll(ctx, st, u, up.Previous, "rollback", UpgradeRolledBack, UpgradeRollingBack)
	})
	return p.upgradeResult(id, err)
}

// upgrader is the Upgrader of gateway id's driver, refusing a gateway that cannot be
// rolled to image (its driver's CheckSpec).
func (p *Provisioner) upgrader(id, image string) (Upgrader, error) {
	spec, _, err := p.loadSpec(id)
	if err != nil {
		return nil, err
	}
	if spec.Absent {
		return nil, fmt.Errorf("%w: %q", ErrDestroying, id)
	}
	d := p.cfg.Drivers[spec.Driver]
	u, ok := d.(Upgrader)
	if !ok {
		return nil, invalidError{fmt.Errorf("driver %q: its gateways run no image to upgrade (local gateways run the pinned OpenClaw; upgrade applies to fly)", spec.Driver)}
	}
	if c, ok := d.(SpecChecker); ok && image != "" {
		spec.Image = image
		if err := c.CheckSpec(spec); err != nil {
			return nil, invalidError{err}
		}
	}
	return u, nil
}

// roll records image as the spec's, rolls the gateway to it, and records the end: ok, or
// fail with the error. Stopped (shutdown, lost lease), it records nothing: the upgrade
// stays as recorded, for a rerun to resume.
func (p *Provisioner) roll(ctx context.Context, st *pass, u Upgrader, image, op string, ok, fail UpgradeState) error {
	id := st.spec.ID
	// The spec holds the image too, so the reconciler's passes keep the gateway on it.
	spec, err := p.changeSpec(id, func(s *Spec) bool {
		changed := s.Image != image
		s.Image = image
		return changed
	})
	if err != nil {
		return err
	}
	st.spec = spec
	if err := p.crashAt(op + " " + id + ": recorded"); err != nil {
		return err
	}
	_, err = u.Upgrade(ctx, id, image)
	if cerr := p.crashAt(op + " " + id + ": acted"); cerr != nil {
		return cerr
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	up := st.rec.Upgrade
	if err != nil && !errors.Is(err, ErrUnhealthy) {
		// Nothing learnt about the image: the upgrade stays as recorded, for a rerun.
		return fmt.Errorf("provisioner: %s %q to %s: %w", op, id, image, err)
	}
	up.Finished = p.deps.Now().UTC()
	if err != nil {
		err = fmt.Errorf("%w: %s %q to %s: %w", ErrUpgradeFailed, op, id, image, err)
		up.State, up.Error = fail, err.Error()
	} else {
		up.State = ok
		if ok == UpgradeDone {
			up.Error = "" // a rolled back one keeps the failure that made it go back
		}
	}
	p.upm.outcome(st.driver, op, err)
	if eerr := p.emit(ctx, st, "provision."+op, "", op, err, 0); eerr != nil {
		return errors.Join(err, eerr)
	}
	return errors.Join(err, p.save(ctx, st))
}

// underLease runs fn with gateway id's spec and status, holding its lease (waiting, until
// ctx ends, for a pass that holds it), refreshed while fn works; then it wakes the
// reconciler, whose pass finds the gateway as its spec now asks.
func (p *Provisioner) underLease(ctx context.Context, id string, fn func(context.Context, *pass) error) error {
	var l *lease
	for attempt := 1; ; attempt++ {
		var err error
		if l, err = p.claim(id); err == nil {
			break
		}
		if !errors.Is(err, ErrLeaseHeld) {
			return err
		}
		if err := retry.Sleep(ctx, retry.Backoff(attempt)); err != nil {
			return fmt.Errorf("%w (waited until %w)", err, ctx.Err())
		}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	stop := l.keep(ctx, cancel)
	err := p.leased(ctx, id, l.Token(), fn)
	stop()
	cancel(nil)
	var k killed
	if !errors.As(err, &k) { // a dead process releases nothing
		l.release(p)
		p.unclaim(id)
		p.Wake(id)
	}
	return err
}

func (p *Provisioner) leased(ctx context.Context, id string, fence uint64, fn func(context.Context, *pass) error) error {
	spec, specRaw, err := p.loadSpec(id)
	if err != nil {
		return err
	}
	if spec.Absent {
		return fmt.Errorf("%w: %q", ErrDestroying, id)
	}
	rec, raw, err := p.loadRecord(id)
	if err != nil {
		return err
	}
	rec.Tenant = spec.Tenant
	st := &pass{spec: spec, specRaw: specRaw, rec: rec, raw: raw, driver: spec.Driver, fence: fence}
	if err := p.stampFence(ctx, st); err != nil {
		return err
	}
	return fn(ctx, st)
}

// claim takes gateway id for this process (no pass of it runs on id) and its lease.
func (p *Provisioner) claim(id string) (*lease, error) {
	p.busyMu.Lock()
	defer p.busyMu.Unlock()
	if p.busy[id] {
		return nil, fmt.Errorf("%w: %q (this process)", ErrLeaseHeld, id)
	}
	l, err := p.acquire(id)
	if err == nil {
		p.busy[id] = true
	}
	return l, err
}

func (p *Provisioner) unclaim(id string) {
	p.busyMu.Lock()
	delete(p.busy, id)
	p.busyMu.Unlock()
}

// upgradeResult is gateway id's status after an upgrade or rollback, with its error.
func (p *Provisioner) upgradeResult(id string, err error) (Status, error) {
	st, gerr := p.Get(id)
	if gerr != nil {
		return Status{}, errors.Join(err, gerr)
	}
	return st, err
}

// runningImage is the image gateway s runs, as far as the provisioner knows: its last
// upgrade's outcome, else the spec's image once a pass brought the world to it (one that
// finished an upgrade a crash interrupted, too).
func runningImage(s Spec, rec *record) string {
	if up := rec.Upgrade; up != nil {
		switch up.State {
		case UpgradeDone:
			return up.Image
		case UpgradeRolledBack:
			return up.Previous
		case UpgradeFailed:
			return "" // unhealthy on up.Image until rolled back
		}
	}
	if rec.ObservedGeneration == s.Generation && rec.Error == "" {
		return s.Image
	}
	return ""
}
