package provisioner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/registry"
	"github.com/moltgate/moltgate/store"
)

// Buckets the provisioner owns in the store. A gateway's spec and its status are separate
// records: the API writes the spec, only the holder of the gateway's lease writes the status,
// so neither overwrites the other.
const (
	specBucket   = "provisioner.specs"
	statusBucket = "provisioner.status"
	leaseBucket  = "provisioner.leases"
)

// KV is the storage the provisioner needs; store.Bolt and store.Redis implement it. Swap is
// an atomic compare-and-swap (nil old: must be absent; nil new: delete) returning
// store.ErrConflict on a mismatch.
type KV interface {
	Get(bucket, key string) ([]byte, error)
	ForEach(bucket string, fn func(key string, value []byte) error) error
	Swap(bucket, key string, old, new []byte) error
}

// Registry is the registry as the "register" step changes it; registry.Registry implements it.
type Registry interface {
	Get(id string) (registry.Gateway, error)
	Create(ctx context.Context, g registry.Gateway, token string) (registry.Gateway, error)
	Update(ctx context.Context, id string, change func(*registry.Gateway) error) (registry.Gateway, error)
	SetToken(ctx context.Context, id, token string) (registry.Gateway, error)
	Delete(ctx context.Context, id string) error
}

// Sealer seals and opens the gateway tokens the provisioner stores; keystore.Keystore
// implements it.
type Sealer interface {
	Seal(tenant, record, purpose string, plaintext []byte) ([]byte, error)
	Open(tenant, record, purpose string, sealed []byte) ([]byte, error)
}

// ActiveKeys lists a tenant's active keys (metadata only); keystore.Keys implements it.
type ActiveKeys interface {
	Active(tenant string) (map[string]keystore.APIKey, error)
}

// Opener opens one tenant secret, auditing the open; keystore.Opener implements it.
type Opener interface {
	Open(ctx context.Context, tenant, id string) (keystore.Secret, error)
}

// Auditor receives audit events; audit.FileLog implements it.
type Auditor interface {
	Emit(ctx context.Context, e audit.Event) error
}

// Config configures the provisioner.
type Config struct {
	// Drivers by name ("local", "fly"). At least one is required.
	Drivers map[string]Driver
	// DefaultDriver is the driver of a spec that names none. Default "local" when there is
	// such a driver, else the only one.
	DefaultDriver string
	// Holder names this process in leases. Default host name, process id and a random suffix.
	Holder string
	// LeaseTTL is how long a lease holds without a refresh; a pass refreshes it every third
	// of it. Default 30s.
	LeaseTTL time.Duration
	// Workers bounds the gateways worked on at once by Run. Default 2.
	Workers int
	// ResyncInterval is how often Run passes over every gateway, to notice what died or
	// drifted. Default 1m.
	ResyncInterval time.Duration
	// Probe, if set, is the last step ("probe"): it must succeed for a gateway to be ready.
	// moltgate serve sends a request through its own proxy to the gateway with the token,
	// so "ready" means "answers through moltgate". Nil leaves the step out.
	Probe func(ctx context.Context, id string, token keystore.Secret) error
	// ProbeTimeout bounds the probe step's wait. Default 60s.
	ProbeTimeout time.Duration
	// OverlapGrace is how long, after the registry took a new token, requests still carrying
	// the old one are retried with the new one (Transport). Default 2m.
	OverlapGrace time.Duration
	// KillAt is for tests of the provisioner and its drivers; nil in production. It is called
	// at each moment of a pass ("ensure local.process: pending recorded", "…: acted", "…:
	// done recorded"; "destroy …" alike); an error ends the pass there, wrapped, as if the
	// process had died: nothing more is written and the lease is not released.
	KillAt func(point string) error
}

// Deps are the parts the provisioner works with.
type Deps struct {
	// KV holds specs, statuses and leases. Required.
	KV KV
	// Sealer seals the gateway tokens. Required.
	Sealer Sealer
	// Registry is where a provisioned gateway is registered. Required.
	Registry Registry
	// Audit receives a provision.step event for every step that changes something. Required.
	Audit Auditor
	// Keys and Opener give drivers the tenant's active provider keys; nil: none.
	Keys   ActiveKeys
	Opener Opener
	// Logger. Required.
	Logger *slog.Logger
	// Metrics registers the provisioner's metrics. Default: not exported.
	Metrics prometheus.Registerer
	// Now is the clock of records and leases. Default time.Now.
	Now func() time.Time
}

// Provisioner records desired gateways and reconciles the world to them. It is safe for
// concurrent use; several processes may share its store (leases keep them apart).
type Provisioner struct {
	cfg   Config
	deps  Deps
	m     *metrics
	upm   *upgradeMetrics
	q     *queue
	ovl   *overlap
	plans map[string][]Step

	// sealing is held (read) from sealing a new token until the status holding it is
	// stored: Quiesce (key rotation) waits for it.
	sealing sync.RWMutex

	busyMu sync.Mutex
	busy   map[string]bool // gateways a pass of this process works on

	// leases are the gateways' (and the fleet upgrade's) leases.
	leases store.Leases
}

const (
	defaultLeaseTTL       = 30 * time.Second
	defaultResyncInterval = time.Minute
	defaultProbeTimeout   = 60 * time.Second
	defaultOverlapGrace   = 2 * time.Minute
)

// New returns a provisioner. Nothing runs until Run (or Reconcile) is called.
func New(cfg Config, deps Deps) (*Provisioner, error) {
	if deps.KV == nil || deps.Sealer == nil || deps.Registry == nil || deps.Audit == nil || deps.Logger == nil {
		return nil, errors.New("provisioner: KV, Sealer, Registry, Audit and Logger are required")
	}
	if len(cfg.Drivers) == 0 {
		return nil, errors.New("provisioner: no driver")
	}
	if cfg.DefaultDriver == "" {
		if _, ok := cfg.Drivers["local"]; ok || len(cfg.Drivers) > 1 {
			cfg.DefaultDriver = "local"
		} else {
			for name := range cfg.Drivers {
				cfg.DefaultDriver = name
			}
		}
	}
	if _, ok := cfg.Drivers[cfg.DefaultDriver]; !ok {
		return nil, fmt.Errorf("provisioner: default driver %q is not configured", cfg.DefaultDriver)
	}
	if cfg.Holder == "" {
		cfg.Holder = store.DefaultHolder()
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = defaultLeaseTTL
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = defaultResyncInterval
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = defaultProbeTimeout
	}
	if cfg.OverlapGrace <= 0 {
		cfg.OverlapGrace = defaultOverlapGrace
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	m, err := newMetrics(deps.Metrics)
	if err != nil {
		return nil, err
	}
	upm, err := newUpgradeMetrics(deps.Metrics)
	if err != nil {
		return nil, err
	}
	p := &Provisioner{cfg: cfg, deps: deps, m: m, upm: upm, q: newQueue(), busy: map[string]bool{}, plans: map[string][]Step{},
		leases: store.Leases{KV: deps.KV, Bucket: leaseBucket, Holder: cfg.Holder, TTL: cfg.LeaseTTL, Now: deps.Now}}
	p.ovl = &overlap{byHost: map[string]*tokenPair{}, now: deps.Now, retries: m.overlapRetries}
	for name, d := range cfg.Drivers {
		plan, err := p.plan(d)
		if err != nil {
			return nil, fmt.Errorf("provisioner: driver %q: %w", name, err)
		}
		p.plans[name] = plan
		if w, ok := d.(Waker); ok {
			w.SetWake(p.Wake)
		}
	}
	return p, nil
}

// plan is the step list of driver d: token, the driver's steps, register, probe.
func (p *Provisioner) plan(d Driver) ([]Step, error) {
	plan := []Step{tokenStep{p}}
	plan = append(plan, d.Steps()...)
	plan = append(plan, registerStep{p})
	if p.cfg.Probe != nil {
		plan = append(plan, probeStep{p})
	}
	seen := map[string]bool{}
	for _, s := range plan {
		if s.Name() == "" || seen[s.Name()] {
			return nil, fmt.Errorf("step name %q empty or repeated", s.Name())
		}
		seen[s.Name()] = true
	}
	return plan, nil
}

// Apply records s as the desired state of gateway s.ID: a new gateway, or a new owner or
// image of one. Tenant and driver of a gateway cannot change. It returns the stored spec
// and whether anything changed, and wakes the reconciler.
func (p *Provisioner) Apply(ctx context.Context, s Spec) (Spec, bool, error) {
	if s.Driver == "" {
		s.Driver = p.cfg.DefaultDriver
	}
	if err := p.validate(s); err != nil {
		return Spec{}, false, err
	}
	for {
		cur, raw, err := p.loadSpec(s.ID)
		now := p.deps.Now().UTC()
		var next Spec
		switch {
		case errors.Is(err, ErrNotFound):
			// An id the registry holds without a spec was registered by other means: taking
			// it over would hand another party's gateway to this tenant.
			if _, gerr := p.deps.Registry.Get(s.ID); gerr == nil {
				return Spec{}, false, fmt.Errorf("%w: %q is registered and not provisioned (gateway add)", ErrExists, s.ID)
			}
			next = Spec{ID: s.ID, Tenant: s.Tenant, Owner: s.Owner, Driver: s.Driver, Image: s.Image,
				TokenGeneration: 1, Generation: 1, Created: now, Updated: now}
		case err != nil:
			return Spec{}, false, err
		case cur.Absent:
			return Spec{}, false, fmt.Errorf("%w: %q", ErrDestroying, s.ID)
		case cur.Tenant != s.Tenant || cur.Driver != s.Driver:
			return Spec{}, false, fmt.Errorf("%w: %q belongs to tenant %q with driver %q", ErrExists, s.ID, cur.Tenant, cur.Driver)
		case cur.Owner == s.Owner && cur.Image == s.Image:
			p.Wake(s.ID)
			return cur, false, nil
		default:
			next = cur
			next.Owner, next.Image = s.Owner, s.Image
			next.Generation++
			next.Updated = now
		}
		if err := p.swapSpec(next, raw); errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			return Spec{}, false, err
		}
		p.Wake(s.ID)
		return next, true, nil
	}
}

// Destroy records that gateway id must go: the reconciler removes everything in reverse
// order and then forgets it.
func (p *Provisioner) Destroy(ctx context.Context, id string) (Spec, error) {
	return p.changeSpec(id, func(s *Spec) bool {
		if s.Absent {
			return false
		}
		s.Absent = true
		return true
	})
}

// RotateToken asks for a new gateway token: the reconciler makes one, installs it in the
// gateway and then swaps it in the registry, retrying requests that carry the old one in the
// meantime (Transport), so no request fails.
func (p *Provisioner) RotateToken(ctx context.Context, id string) (Spec, error) {
	return p.changeSpec(id, func(s *Spec) bool {
		s.TokenGeneration++
		return true
	})
}

func (p *Provisioner) changeSpec(id string, change func(*Spec) bool) (Spec, error) {
	for {
		cur, raw, err := p.loadSpec(id)
		if err != nil {
			return Spec{}, err
		}
		if cur.Absent {
			p.Wake(id)
			if change(&cur) { // only Destroy accepts a gateway being destroyed, as a no-op
				return Spec{}, fmt.Errorf("%w: %q", ErrDestroying, id)
			}
			return cur, nil
		}
		if !change(&cur) {
			return cur, nil
		}
		cur.Generation++
		cur.Updated = p.deps.Now().UTC()
		if err := p.swapSpec(cur, raw); errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			return Spec{}, err
		}
		p.Wake(id)
		return cur, nil
	}
}

func (p *Provisioner) validate(s Spec) error {
	// The registry's rules for id (a DNS label), tenant and owner; the upstream is the
	// driver's to find, so a placeholder stands in for it.
	g := registry.Gateway{ID: s.ID, Tenant: s.Tenant, Owner: s.Owner, Upstream: "http://127.0.0.1", AuthMode: registry.AuthToken}
	var errs []error
	if err := g.Validate(); err != nil {
		errs = append(errs, err)
	}
	d, ok := p.cfg.Drivers[s.Driver]
	if !ok {
		errs = append(errs, fmt.Errorf("driver %q: want one of %v", s.Driver, slices.Sorted(maps.Keys(p.cfg.Drivers))))
	} else if c, ok := d.(SpecChecker); ok {
		if err := c.CheckSpec(s); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return invalidError{errors.Join(errs...)}
}

// invalidError is a refused spec: errors.Is(err, ErrInvalid), with the message of what
// refused it (each problem naming its field).
type invalidError struct{ error }

func (e invalidError) Is(target error) bool { return target == ErrInvalid }

// Get returns gateway id's spec and status.
func (p *Provisioner) Get(id string) (Status, error) {
	s, _, err := p.loadSpec(id)
	if err != nil {
		return Status{}, err
	}
	rec, _, err := p.loadRecord(id)
	if err != nil {
		return Status{}, err
	}
	return p.status(s, rec), nil
}

// List returns every provisioned gateway's status, sorted by id.
func (p *Provisioner) List() ([]Status, error) {
	var specs []Spec
	err := p.deps.KV.ForEach(specBucket, func(_ string, v []byte) error {
		var s Spec
		if err := json.Unmarshal(v, &s); err != nil {
			return fmt.Errorf("provisioner: decode spec: %w", err)
		}
		specs = append(specs, s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]Status, 0, len(specs))
	for _, s := range specs {
		rec, _, err := p.loadRecord(s.ID)
		if err != nil {
			return nil, err
		}
		out = append(out, p.status(s, rec))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Spec.ID < out[j].Spec.ID })
	return out, nil
}

// status is the public view of spec s and record rec: the plan's steps in order, the
// ones not run yet as waiting.
func (p *Provisioner) status(s Spec, rec *record) Status {
	st := Status{Spec: s, ObservedGeneration: rec.ObservedGeneration, Upstream: rec.Upstream,
		Outputs: maps.Clone(rec.Outputs), Drift: slices.Clone(rec.Drift), Error: rec.Error, Failures: rec.Failures, Updated: rec.Updated,
		Rotating: rec.PrevToken != nil, Upgrade: rec.Upgrade.clone(), Image: runningImage(s, rec)}
	if rec.Token != nil {
		st.TokenGeneration = rec.Token.Generation
	}
	plan := p.plans[s.Driver]
	if s.Absent {
		plan = slices.Clone(plan)
		slices.Reverse(plan)
	}
	for _, step := range plan {
		if ss := rec.step(step.Name()); ss != nil {
			st.Steps = append(st.Steps, *ss)
		} else if !s.Absent {
			st.Steps = append(st.Steps, StepStatus{Name: step.Name(), State: StepWaiting})
		}
	}
	switch {
	case s.Absent:
		st.Phase = PhaseDestroying
	case rec.ObservedGeneration == s.Generation && rec.Error == "":
		st.Phase = PhaseReady
	case len(rec.Steps) == 0 && rec.Error == "":
		st.Phase = PhasePending
	default:
		st.Phase = PhaseProvisioning
	}
	return st
}

// Wake asks for a pass over gateway id soon (Run's workers take it).
func (p *Provisioner) Wake(id string) { p.q.add(id, time.Now()) }

// WakeTenant asks for a pass over every gateway of tenant: its keys changed, and a gateway
// that holds other keys than the active ones gets the new ones.
func (p *Provisioner) WakeTenant(tenant string) {
	_ = p.deps.KV.ForEach(specBucket, func(id string, v []byte) error {
		var s Spec
		if json.Unmarshal(v, &s) == nil && s.Tenant == tenant {
			p.Wake(id)
		}
		return nil
	})
}

func (p *Provisioner) loadSpec(id string) (Spec, []byte, error) {
	raw, err := p.deps.KV.Get(specBucket, id)
	if errors.Is(err, store.ErrNotFound) {
		return Spec{}, nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if err != nil {
		return Spec{}, nil, fmt.Errorf("provisioner: read spec %q: %w", id, err)
	}
	var s Spec
	if err := json.Unmarshal(raw, &s); err != nil {
		return Spec{}, nil, fmt.Errorf("provisioner: decode spec %q: %w", id, err)
	}
	return s, raw, nil
}

func (p *Provisioner) swapSpec(s Spec, old []byte) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if err := p.deps.KV.Swap(specBucket, s.ID, old, b); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return err
		}
		return fmt.Errorf("provisioner: write spec %q: %w", s.ID, err)
	}
	return nil
}
