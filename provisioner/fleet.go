package provisioner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moltgate/moltgate/store"
)

// The fleet upgrade's record and lease: one fleet upgrade at a time. The lease key is no
// gateway id (ids are DNS labels, without a slash).
const (
	fleetBucket = "provisioner.fleet"
	fleetKey    = "upgrade"
	fleetLease  = "fleet/upgrade"
)

// FleetSpec asks for every gateway whose driver runs images to be rolled to Image: Canary
// gateways first, then the rest in batches of Batch.
type FleetSpec struct {
	// Image is the image, pinned by digest.
	Image string `json:"image"`
	// Canary is how many gateways are upgraded first, as a batch of their own. Default 0.
	Canary int `json:"canary"`
	// Batch is how many gateways each later batch upgrades at once (bounded by
	// Config.Workers). Default 1.
	Batch int `json:"batch"`
}

// FleetState is where a fleet upgrade stands.
type FleetState string

// States of a fleet upgrade.
const (
	// FleetRunning: batches remain (or a crash interrupted it: UpgradeFleet with the same
	// image resumes it).
	FleetRunning FleetState = "running"
	// FleetRollingBack: a health check failed in batch Current; its gateways are being
	// returned to their previous images.
	FleetRollingBack FleetState = "rolling_back"
	// FleetHalted: a health check failed in batch Current; its gateways run their previous
	// images again, the earlier batches the new one, the later ones were not touched.
	FleetHalted FleetState = "halted"
	// FleetDone: every gateway of every batch runs Image.
	FleetDone FleetState = "done"
)

// Fleet is a fleet upgrade as recorded: its plan, fixed when it starts, and its progress.
type Fleet struct {
	Spec  FleetSpec  `json:"spec"`
	State FleetState `json:"state"`
	// Batches are the gateway ids of each batch, the canaries first.
	Batches [][]string `json:"batches"`
	// Current is the batch being upgraded (rolled back, when halted).
	Current int `json:"current"`
	// Failed are the gateways of batch Current whose health check failed.
	Failed  []string  `json:"failed,omitempty"`
	Error   string    `json:"error,omitempty"`
	Started time.Time `json:"started,omitzero"`
	Updated time.Time `json:"updated,omitzero"`
}

// FleetProgress is one gateway's change in a fleet upgrade, for progress output.
type FleetProgress struct {
	Batch   int    `json:"batch"`
	Gateway string `json:"gateway"`
	Status  Status `json:"status"`
	Err     error  `json:"-"`
}

// UpgradeFleet runs the fleet upgrade fs: it plans the batches (the canaries, then batches
// of fs.Batch, gateways in id order, leaving out those destroyed, those already on the
// image and those whose driver runs no image), records the plan, and upgrades batch after
// batch, each gateway as Upgrade does. When a gateway of a batch fails its health check,
// the fleet halts: the whole batch is rolled back to its previous images and
// ErrUpgradeFailed returned, earlier batches stay upgraded, later ones are not touched.
//
// Its progress is recorded before each change: after a crash, or when ctx ended, calling
// it again with the same image resumes where it stopped (the recorded plan wins over fs's
// batch sizes). Another image while one is unfinished is refused (ErrExists); a halted or
// done fleet upgrade is replaced by a new plan. progress, if set, is told of each
// gateway's change, one call at a time.
func (p *Provisioner) UpgradeFleet(ctx context.Context, fs FleetSpec, progress func(FleetProgress)) (Fleet, error) {
	if err := PinnedImage(fs.Image); err != nil {
		return Fleet{}, err
	}
	if fs.Canary < 0 || fs.Batch < 0 {
		return Fleet{}, invalidError{fmt.Errorf("canary, batch: negative (%d, %d)", fs.Canary, fs.Batch)}
	}
	if fs.Batch == 0 {
		fs.Batch = 1
	}
	l, err := p.acquire(fleetLease)
	if errors.Is(err, ErrLeaseHeld) {
		return Fleet{}, fmt.Errorf("%w: another fleet upgrade is running", ErrLeaseHeld)
	}
	if err != nil {
		return Fleet{}, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	stop := l.keep(ctx, cancel)
	f := &fleetRun{p: p, progress: progress}
	err = f.run(ctx, fs)
	stop()
	cancel(nil)
	var k killed
	if !errors.As(err, &k) {
		l.release(p)
	}
	return f.f, err
}

// CurrentFleet returns the last fleet upgrade recorded, ErrNotFound if none.
func (p *Provisioner) CurrentFleet() (Fleet, error) {
	f, _, err := p.loadFleet()
	return f, err
}

// fleetRun is one run of a fleet upgrade: the record it read or last wrote.
type fleetRun struct {
	p        *Provisioner
	f        Fleet
	raw      []byte
	progress func(FleetProgress)
}

func (r *fleetRun) run(ctx context.Context, fs FleetSpec) error {
	p := r.p
	f, raw, err := p.loadFleet()
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return err
	case (f.State == FleetRunning || f.State == FleetRollingBack) && f.Spec.Image != fs.Image:
		r.f = f
		return fmt.Errorf("%w: a fleet upgrade to %s is %s: run it again with that image to finish it", ErrExists, f.Spec.Image, f.State)
	}
	r.f, r.raw = f, raw
	if raw == nil || f.State == FleetHalted || f.State == FleetDone {
		plan, err := p.planFleet(fs)
		if err != nil {
			return err
		}
		r.f = Fleet{Spec: fs, State: FleetRunning, Batches: plan, Started: p.deps.Now().UTC()}
		if err := r.save(); err != nil {
			return err
		}
	}
	for len(r.f.Batches) > 0 {
		if r.f.State == FleetRunning {
			failed, err := r.each(ctx, func(ctx context.Context, id string) (Status, error) {
				return p.Upgrade(ctx, id, r.f.Spec.Image)
			})
			if err != nil {
				return err
			}
			if len(failed) == 0 {
				if err := p.crashAt(fmt.Sprintf("fleet batch %d: upgraded", r.f.Current+1)); err != nil {
					return err
				}
				if r.f.Current == len(r.f.Batches)-1 {
					break
				}
				r.f.Current++
				if err := r.save(); err != nil {
					return err
				}
				continue
			}
			r.f.State, r.f.Failed = FleetRollingBack, failed
			r.f.Error = fmt.Sprintf("health check failed in batch %d: %s", r.f.Current+1, strings.Join(failed, ", "))
			if err := r.save(); err != nil {
				return err
			}
		}
		// The whole batch goes back, so a halted fleet leaves each gateway on one of two
		// known images: the new one (earlier batches) or its previous one.
		stuck, err := r.each(ctx, p.Rollback)
		if err != nil {
			return err
		}
		if len(stuck) > 0 {
			return fmt.Errorf("%w: batch %d halted; rollback of %s failed: run the upgrade again to retry it",
				ErrUpgradeFailed, r.f.Current+1, strings.Join(stuck, ", "))
		}
		r.f.State = FleetHalted
		if err := r.save(); err != nil {
			return err
		}
		return fmt.Errorf("%w: %s; the batch is rolled back, later batches untouched", ErrUpgradeFailed, r.f.Error)
	}
	r.f.State = FleetDone
	return r.save()
}

// each runs do on every gateway of the current batch, Config.Workers at a time, and
// returns those it failed with ErrUpgradeFailed. A gateway destroyed meanwhile is skipped;
// any other error (ctx ended, a store error) is returned, with the fleet left to resume.
func (r *fleetRun) each(ctx context.Context, do func(context.Context, string) (Status, error)) ([]string, error) {
	batch := r.f.Batches[r.f.Current]
	var (
		mu     sync.Mutex
		failed []string
		errs   []error
		wg     sync.WaitGroup
		sem    = make(chan struct{}, r.p.cfg.Workers)
	)
	for _, id := range batch {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			st, err := do(ctx, id)
			mu.Lock()
			defer mu.Unlock()
			if r.progress != nil && st.Spec.ID != "" {
				r.progress(FleetProgress{Batch: r.f.Current, Gateway: id, Status: st, Err: err})
			}
			switch {
			case err == nil, errors.Is(err, ErrNotFound), errors.Is(err, ErrDestroying):
			case errors.Is(err, ErrUpgradeFailed):
				failed = append(failed, id)
			default:
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	slices.Sort(failed)
	return failed, errors.Join(errs...)
}

// planFleet lists the gateways to upgrade to fs.Image, in id order, cut into batches.
func (p *Provisioner) planFleet(fs FleetSpec) ([][]string, error) {
	all, err := p.List()
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, st := range all {
		if _, ok := p.cfg.Drivers[st.Spec.Driver].(Upgrader); ok && !st.Spec.Absent && st.Image != fs.Image {
			ids = append(ids, st.Spec.ID)
		}
	}
	var plan [][]string
	if n := min(fs.Canary, len(ids)); n > 0 {
		plan, ids = append(plan, ids[:n]), ids[n:]
	}
	for b := range slices.Chunk(ids, fs.Batch) {
		plan = append(plan, b)
	}
	return plan, nil
}

func (p *Provisioner) loadFleet() (Fleet, []byte, error) {
	raw, err := p.deps.KV.Get(fleetBucket, fleetKey)
	if errors.Is(err, store.ErrNotFound) {
		return Fleet{}, nil, fmt.Errorf("%w: no fleet upgrade", ErrNotFound)
	}
	if err != nil {
		return Fleet{}, nil, fmt.Errorf("provisioner: read fleet upgrade: %w", err)
	}
	var f Fleet
	if err := json.Unmarshal(raw, &f); err != nil {
		return Fleet{}, nil, fmt.Errorf("provisioner: decode fleet upgrade: %w", err)
	}
	return f, raw, nil
}

// save writes the fleet record over the one last read or written.
func (r *fleetRun) save() error {
	r.f.Updated = r.p.deps.Now().UTC()
	b, err := json.Marshal(r.f)
	if err != nil {
		return err
	}
	if err := r.p.deps.KV.Swap(fleetBucket, fleetKey, r.raw, b); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("%w: fleet upgrade record", ErrConflict)
		}
		return fmt.Errorf("provisioner: write fleet upgrade: %w", err)
	}
	r.raw = b
	r.p.upm.fleet(r.f)
	return nil
}

// upgradeMetrics: upgrade outcomes and the fleet upgrade's progress. Labels are bounded:
// drivers, ops, positions and states are fixed by the code.
type upgradeMetrics struct {
	upgrades     *prometheus.CounterVec
	fleetBatches *prometheus.GaugeVec
	fleetState   *prometheus.GaugeVec
}

func newUpgradeMetrics(reg prometheus.Registerer) (*upgradeMetrics, error) {
	m := &upgradeMetrics{
		upgrades: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moltgate_provisioner_upgrades_total",
			Help: "Gateway image upgrades and rollbacks finished, by driver, op (upgrade, rollback) and outcome (success, unhealthy).",
		}, []string{"driver", "op", "outcome"}),
		fleetBatches: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moltgate_provisioner_fleet_upgrade_batches",
			Help: "The last fleet upgrade's batches by position: done (upgraded), current, waiting.",
		}, []string{"position"}),
		fleetState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moltgate_provisioner_fleet_upgrade_state",
			Help: "1 for the last fleet upgrade's state (running, rolling_back, halted, done), 0 for the others.",
		}, []string{"state"}),
	}
	if reg == nil {
		reg = prometheus.NewRegistry() // not exported
	}
	for _, c := range []prometheus.Collector{m.upgrades, m.fleetBatches, m.fleetState} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *upgradeMetrics) outcome(driver, op string, err error) {
	outcome := "success"
	if err != nil {
		outcome = "unhealthy"
	}
	m.upgrades.WithLabelValues(driver, op, outcome).Inc()
}

// fleet sets the gauges to fleet upgrade f.
func (m *upgradeMetrics) fleet(f Fleet) {
	done, current := f.Current, min(1, len(f.Batches))
	if f.State == FleetDone {
		done, current = len(f.Batches), 0
	}
	m.fleetBatches.WithLabelValues("done").Set(float64(done))
	m.fleetBatches.WithLabelValues("current").Set(float64(current))
	m.fleetBatches.WithLabelValues("waiting").Set(float64(len(f.Batches) - done - current))
	for _, s := range []FleetState{FleetRunning, FleetRollingBack, FleetHalted, FleetDone} {
		v := 0.0
		if s == f.State {
			v = 1
		}
		m.fleetState.WithLabelValues(string(s)).Set(v)
	}
}
