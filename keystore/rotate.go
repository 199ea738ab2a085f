package keystore

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/moltgate/moltgate/store"
)

// ResealFunc is handed to a Target for each sealed value it holds. It returns the value
// re-encrypted under the current keys and changed=true, or the input and changed=false when
// the value is current already (or not concerned by the rotation).
type ResealFunc func(tenant, record, purpose string, sealed []byte) (out []byte, changed bool, err error)

// Target is a set of stored records holding sealed values that rotation re-encrypts: the key
// records (Keys) and the registry's gateway tokens (registry.Registry). Reseal must replace
// each changed value atomically per record and without losing a concurrent change to the
// record (compare-and-swap, or the owner's own lock).
type Target interface {
	Reseal(ctx context.Context, fn ResealFunc) error
}

// Quiescer is implemented by a Target whose writers seal a value before storing it (a new key
// record, a new gateway token). Quiesce returns once every such write that sealed before the
// call has been stored. Rotation calls it before the usage scan that decides retirement, so a
// value sealed under a version about to retire, but not stored yet, is seen by the scan
// (and keeps its version loaded) instead of landing after the version is gone.
type Quiescer interface {
	Quiesce()
}

// errUnchanged makes Keys.update skip the write.
var errUnchanged = errors.New("unchanged")

// Reseal implements Target for the key records and the tenants' fingerprint keys.
func (m *Keys) Reseal(ctx context.Context, fn ResealFunc) error {
	var tenants []string
	if err := m.cfg.KV.ForEach(fingerprintBucket, func(k string, _ []byte) error { tenants = append(tenants, k); return nil }); err != nil {
		return err
	}
	for _, tenant := range tenants {
		t := ValueTarget{KV: m.cfg.KV, Bucket: fingerprintBucket, Key: tenant,
			Tenant: tenant, Record: fingerprintRecord, Purpose: fingerprintPurpose}
		if err := t.Reseal(ctx, fn); err != nil {
			return err
		}
	}
	var names []string
	if err := m.cfg.KV.ForEach(keysBucket, func(k string, _ []byte) error { names = append(names, k); return nil }); err != nil {
		return err
	}
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		tenant, id, _ := strings.Cut(name, "/")
		_, err := m.update(tenant, id, func(r *keyRecord) error {
			if len(r.Sealed) == 0 {
				return errUnchanged
			}
			out, changed, err := fn(tenant, keyRecordName(id), string(r.Kind), r.Sealed)
			if err != nil {
				return fmt.Errorf("keystore: reseal %s: %w", name, err)
			}
			if !changed {
				return errUnchanged
			}
			r.Sealed = out
			return nil
		})
		if err != nil && !errors.Is(err, errUnchanged) && !errors.Is(err, ErrKeyNotFound) {
			return err
		}
	}
	return nil
}

// Job is a rotation in progress (or the last one). The master key's job and each tenant's are
// separate records in bucket "keystore.rotation", so they run independently of one another and
// a restarted process resumes every unfinished one. Re-encryption needs no cursor: every
// ciphertext names the key versions that sealed it, so a resumed run skips, without
// decrypting, every record that is current already.
type Job struct {
	// Kind is "master" (a new master key version) or "tenant" (a new salt for Tenant).
	Kind   string `json:"kind"`
	Tenant string `json:"tenant,omitempty"`
	// Master is the master key version the job rotates to; Salt the tenant salt version.
	Master uint32 `json:"master"`
	Salt   uint32 `json:"salt,omitempty"`
	// Phase is "reencrypt", then "done".
	Phase    string    `json:"phase"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	// Resealed counts records re-encrypted so far across resumptions. It is informational: it
	// is checkpointed every 64 records, so after a crash it may be off by up to 64.
	Resealed int `json:"resealed"`
	// Retired lists master key versions removed at the end.
	Retired []uint32 `json:"retired,omitempty"`
	// Error is the last failure, if the job stopped on one; rerunning resumes.
	Error string `json:"error,omitempty"`
	// Fence is the fencing token of the lease of the run that last wrote this record: every
	// process that takes the job over has a greater one.
	Fence uint64 `json:"fence,omitempty"`
	// Holder names the process that last ran the job.
	Holder string `json:"holder,omitempty"`
}

const (
	rotationBucket = "keystore.rotation"
	// masterJobKey holds the master key's job. Every job was stored under it before tenants
	// had their own records: a master job recorded then resumes where it is, and NewRotator
	// moves a tenant job found there to the tenant's record.
	masterJobKey = "job"
	// tenantJobPrefix + tenant holds the tenant's job.
	tenantJobPrefix = "tenant/"
	phaseReencrypt  = "reencrypt"
	phaseDone       = "done"
)

// jobKey is where tenant's job is stored; "" is the master key's.
func jobKey(tenant string) string {
	if tenant == "" {
		return masterJobKey
	}
	return tenantJobPrefix + tenant
}

// RotatorConfig configures a Rotator.
type RotatorConfig struct {
	// Keystore whose keyring and tenant salts rotate. Required.
	Keystore *Keystore
	// KV holds the job records (and the tenant salts). Required.
	KV KV
	// Source makes new master key versions (MasterKeyAdder) and drops retired ones
	// (MasterKeyRetirer, optional). Required for master rotation.
	Source MasterKeySource
	// Targets hold the sealed records. Required.
	Targets []Target
	// Workers bounds how many jobs Run runs at once (the master key's and tenants'); the
	// others wait for one to end. Default 4.
	Workers int
	// Logger. Default: discard.
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Shared runs each job under a lease in the store, for processes that share it (the
	// Redis store): one at a time runs a job, and a job whose process died is taken over.
	// Default off: one process owns the store (bbolt's file lock) and resumes at once.
	Shared bool
	// Holder names this process in the leases of jobs. Default host name, process id and a
	// random suffix.
	Holder string
	// LeaseTTL is how long a job's lease outlives its holder's last renewal (renewed every
	// third of it): a process that dies mid-job leaves it to another after this long, and Run
	// looks for such jobs this often. Default 30s.
	LeaseTTL time.Duration
	// OnReseal, if set, is called each time a re-encrypted value is handed to its target to
	// store, with the count so far in this run (progress reporting; the crash test kills the
	// process from it, so kills land before, during and after the store's write).
	OnReseal func(n int)
}

// Rotator re-encrypts every sealed record under new keys in the background, resumable after a
// crash at any point, while reads and writes go on: at every moment each record opens, under
// its old version or its new one. Old versions are retired only when a full scan finds no
// record using them. The master key's rotation and each tenant's are separate jobs: a tenant
// that rotates again and again never holds up another tenant's rotation or the master key's.
type Rotator struct {
	cfg  RotatorConfig
	wake chan struct{}
	// starting serialises master rotation starts, so two rotate-master calls at once add one
	// master key version, not two. (Tenant starts need no lock: a compare-and-swap of the job
	// record lets one of two concurrent starts record its job.)
	starting sync.Mutex
	// finishing serialises the ends of jobs, the usage scan and retirement: two jobs ending at
	// once would each try to remove the same versions.
	finishing sync.Mutex
	// leases are the jobs' leases (Shared).
	leases store.Leases
}

// NewRotator returns a Rotator. A tenant job recorded by an earlier version, under the one
// record every job then shared, is moved to the tenant's own record so that it resumes.
func NewRotator(cfg RotatorConfig) (*Rotator, error) {
	if cfg.Keystore == nil || cfg.KV == nil || len(cfg.Targets) == 0 {
		return nil, errors.New("keystore: rotator: Keystore, KV and Targets are required")
	}
	if cfg.Workers < 0 {
		return nil, errors.New("keystore: rotator: Workers must not be negative")
	}
	if cfg.Workers == 0 {
		cfg.Workers = 4
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Holder == "" {
		cfg.Holder = store.DefaultHolder()
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 30 * time.Second
	}
	r := &Rotator{cfg: cfg, wake: make(chan struct{}, 1),
		leases: store.Leases{KV: cfg.KV, Bucket: leaseBucket, Holder: cfg.Holder, TTL: cfg.LeaseTTL, Now: cfg.Now}}
	if err := r.moveSharedTenantJob(); err != nil {
		return nil, fmt.Errorf("keystore: rotator: %w", err)
	}
	return r, nil
}

// moveSharedTenantJob moves a tenant job found under the master key's record to the tenant's
// record: the insert first, then the delete, so a crash in between leaves both and the next
// start finishes the move (the tenant's record, if there is one, is kept).
func (r *Rotator) moveSharedTenantJob() error {
	j, raw, ok, err := r.load("")
	if err != nil || !ok || j.Kind != "tenant" {
		return err
	}
	if err := r.cfg.KV.Swap(rotationBucket, jobKey(j.Tenant), nil, raw); err != nil && !errors.Is(err, store.ErrConflict) {
		return err
	}
	if err := r.cfg.KV.Swap(rotationBucket, masterJobKey, raw, nil); err != nil && !errors.Is(err, store.ErrConflict) {
		return err
	}
	return nil
}

// ErrRotationBusy is returned by StartTenant while a master key rotation is unfinished.
var ErrRotationBusy = errors.New("keystore: another rotation is unfinished")

// load reads tenant's job record ("" the master key's) and its stored bytes, for Swap.
func (r *Rotator) load(tenant string) (Job, []byte, bool, error) {
	raw, err := r.cfg.KV.Get(rotationBucket, jobKey(tenant))
	if errors.Is(err, store.ErrNotFound) {
		return Job{}, nil, false, nil
	}
	if err != nil {
		return Job{}, nil, false, err
	}
	j, err := decodeJob(jobKey(tenant), raw)
	return j, raw, err == nil, err
}

func decodeJob(key string, raw []byte) (Job, error) {
	var j Job
	if err := json.Unmarshal(raw, &j); err != nil {
		return Job{}, fmt.Errorf("keystore: rotation job record %q corrupt: %w", key, err)
	}
	return j, nil
}

// Job returns tenant's current or last rotation job, or the master key's when tenant is "";
// ok is false if there never was one.
func (r *Rotator) Job(tenant string) (Job, bool, error) {
	j, _, ok, err := r.load(tenant)
	return j, ok, err
}

// Jobs returns the master key's current or last job, if there was one, then each tenant's,
// in tenant order.
func (r *Rotator) Jobs() ([]Job, error) {
	var out []Job
	if j, ok, err := r.Job(""); err != nil {
		return nil, err
	} else if ok {
		out = append(out, j)
	}
	err := r.cfg.KV.ForEachPrefix(rotationBucket, tenantJobPrefix, func(k string, v []byte) error {
		j, err := decodeJob(k, v)
		out = append(out, j)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// saveJob writes j over the stored job record, unless that record carries a greater fencing
// token: the job was taken over from this run (its lease lapsed while it stalled), and the
// run is refused with ErrLeaseLost rather than overwrite what the new holder wrote.
func (r *Rotator) saveJob(j Job) error {
	v, _ := json.Marshal(j)
	for range 8 {
		cur, raw, ok, err := r.load(j.Tenant)
		if err != nil {
			return err
		}
		if ok && cur.Fence > j.Fence {
			return fmt.Errorf("%w: the job record carries fencing token %d, this run %d", ErrLeaseLost, cur.Fence, j.Fence)
		}
		if err := r.cfg.KV.Swap(rotationBucket, jobKey(j.Tenant), raw, v); !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("keystore: save rotation job: %w", store.ErrConflict)
}

// begin records j, a new job, in place of the finished one read as raw (nil: none). When
// another start recorded its job first, that job is returned instead: it re-encrypts to the
// current versions too, whichever start made them.
func (r *Rotator) begin(raw []byte, j Job, msg string, attrs ...slog.Attr) (Job, error) {
	v, _ := json.Marshal(j)
	err := r.cfg.KV.Swap(rotationBucket, jobKey(j.Tenant), raw, v)
	if errors.Is(err, store.ErrConflict) {
		cur, _, ok, lerr := r.load(j.Tenant)
		if lerr != nil {
			return Job{}, lerr
		}
		if !ok || cur.Phase == phaseDone {
			return Job{}, fmt.Errorf("keystore: start rotation: %w", err)
		}
		j = cur
	} else if err != nil {
		return Job{}, err
	} else {
		r.cfg.Logger.LogAttrs(context.Background(), slog.LevelInfo, msg, attrs...)
	}
	r.signal()
	return j, nil
}

// StartMaster begins a master key rotation: a new version from the source becomes current
// (new seals use it at once), and a job to re-encrypt every record is recorded. If a master
// rotation is unfinished, it is resumed instead of starting another. Tenant rotations do not
// hold it up. Run (or RunJob) does the work.
func (r *Rotator) StartMaster(ctx context.Context) (Job, error) {
	r.starting.Lock()
	defer r.starting.Unlock()
	j, raw, ok, err := r.load("")
	if err != nil {
		return Job{}, err
	}
	if ok && j.Phase != phaseDone {
		r.signal()
		return j, nil
	}
	adder, ok := r.cfg.Source.(MasterKeyAdder)
	if !ok {
		// A read-only source (env): the operator added the new version where the keys are
		// kept and restarted. Re-encrypt everything to the newest loaded version.
		ring := r.cfg.Keystore.ring
		if len(ring.Versions()) < 2 {
			return Job{}, errors.New("keystore: this master key source cannot add versions: add one where the keys are kept, restart, and rotate again")
		}
		j := Job{Kind: "master", Master: ring.Current(), Phase: phaseReencrypt, Started: r.cfg.Now().UTC()}
		return r.begin(raw, j, "keystore: master key rotation started to the newest loaded version",
			slog.Any("master_version", j.Master))
	}
	v, key, err := adder.AddVersion(ctx)
	if err != nil {
		return Job{}, err
	}
	err = r.cfg.Keystore.ring.Add(v, key)
	clear(key)
	if err != nil {
		return Job{}, err
	}
	j = Job{Kind: "master", Master: v, Phase: phaseReencrypt, Started: r.cfg.Now().UTC()}
	return r.begin(raw, j, "keystore: master key rotation started", slog.Any("master_version", v))
}

// StartTenant begins a rotation of tenant's keys: a new salt version becomes current and the
// tenant's records are re-encrypted under it. Each tenant's rotation is a job of its own,
// which other tenants' jobs do not hold up. A second start while the tenant's job is
// unfinished returns that job: both requests are answered by one rotation. While a master
// rotation is unfinished a tenant rotation is refused with ErrRotationBusy (the master job
// re-encrypts the tenant's records already; ask again when it is done).
func (r *Rotator) StartTenant(_ context.Context, tenant string) (Job, error) {
	if !tenantPattern.MatchString(tenant) {
		return Job{}, fmt.Errorf("%w: tenant %q", ErrKeyInvalid, tenant)
	}
	if m, ok, err := r.Job(""); err != nil {
		return Job{}, err
	} else if ok && m.Phase != phaseDone {
		return m, ErrRotationBusy
	}
	j, raw, ok, err := r.load(tenant)
	if err != nil {
		return Job{}, err
	}
	if ok && j.Phase != phaseDone {
		r.signal()
		return j, nil
	}
	s, err := r.cfg.Keystore.AddTenantSalt(tenant)
	if err != nil {
		return Job{}, err
	}
	j = Job{Kind: "tenant", Tenant: tenant, Master: r.cfg.Keystore.ring.Current(), Salt: s, Phase: phaseReencrypt,
		Started: r.cfg.Now().UTC()}
	return r.begin(raw, j, "keystore: tenant key rotation started", slog.String("tenant", tenant), slog.Any("salt_version", s))
}

func (r *Rotator) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run resumes every unfinished job at once, then runs each job started, until ctx ends; it
// returns when the jobs it runs have stopped. Jobs run side by side, at most Workers at a
// time and one per tenant (and one master job). A failed job is logged and recorded in the
// job; it is retried at the next start or signal.
func (r *Rotator) Run(ctx context.Context) error {
	sem := semaphore.NewWeighted(int64(r.cfg.Workers))
	var (
		wg sync.WaitGroup
		mu sync.Mutex
		// running has the tenants ("" the master key) whose job a goroutine runs; again, those
		// of them asked for while it ran, whose record it reads once more when done (a job
		// started just as the last one ended).
		running = map[string]bool{}
		again   = map[string]bool{}
	)
	defer wg.Wait()
	r.signal()
	// Jobs started elsewhere, or left by a process that died holding their lease, are
	// looked for at every lease lifetime (and at once when the store says so: Changed).
	tick := time.NewTicker(r.cfg.LeaseTTL)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-tick.C:
		}
		jobs, err := r.Jobs()
		if err != nil {
			r.cfg.Logger.Error("keystore: rotation jobs unreadable; retried at the next start", "err", err)
			continue
		}
		for _, j := range jobs {
			if j.Phase == phaseDone {
				continue
			}
			tenant := j.Tenant
			mu.Lock()
			busy := running[tenant]
			running[tenant], again[tenant] = true, busy
			mu.Unlock()
			if busy {
				continue
			}
			wg.Go(func() {
				for {
					if err := sem.Acquire(ctx, 1); err == nil {
						j, err := r.RunJob(ctx, tenant)
						sem.Release(1)
						if err != nil && ctx.Err() == nil {
							r.cfg.Logger.Error("keystore: rotation stopped; it resumes at the next start or rotate command",
								"kind", j.Kind, "tenant", j.Tenant, "err", err)
						}
					}
					mu.Lock()
					more := again[tenant] && ctx.Err() == nil
					if more {
						again[tenant] = false
					} else {
						delete(running, tenant)
						delete(again, tenant)
					}
					mu.Unlock()
					if !more {
						return
					}
				}
			})
		}
	}
}

// Changed follows a change of a job record in the store, which another process sharing it
// may have made (a rotation started there): the master key's job loads the master key
// versions this process lacks from the source (the one that started it added one), and Run
// is woken to look at the jobs. Changes of other buckets are ignored.
func (r *Rotator) Changed(ctx context.Context, bucket, key string) error {
	if bucket != rotationBucket {
		return nil
	}
	defer r.signal()
	if key != masterJobKey || r.cfg.Source == nil {
		return nil
	}
	versions, err := r.cfg.Source.Load(ctx)
	if err != nil {
		return fmt.Errorf("keystore: reload master key versions: %w", err)
	}
	ring := r.cfg.Keystore.ring
	loaded := ring.Versions()
	var errs []error
	for v, key := range versions {
		if !slices.Contains(loaded, v) {
			errs = append(errs, ring.Add(v, key))
		}
		clear(key)
	}
	return errors.Join(errs...)
}

// RunJob runs tenant's unfinished job ("" the master key's), if any, to the end and returns
// it. With Shared, it runs under the job's lease: one process at a time runs a job, across
// every process sharing the store, and a job whose lease another live process holds is
// returned as it is, not run.
func (r *Rotator) RunJob(ctx context.Context, tenant string) (Job, error) {
	j, _, ok, err := r.load(tenant)
	if err != nil || !ok || j.Phase == phaseDone {
		return j, err
	}
	if r.cfg.Shared {
		l, held, err := r.acquire(jobKey(tenant))
		if err != nil || held {
			return j, err
		}
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		defer keep(ctx, l, cancel)()
		// Read again under the lease: the last holder may have finished it meanwhile.
		if j, _, ok, err = r.load(tenant); err != nil || !ok || j.Phase == phaseDone {
			return j, err
		}
		j.Fence, j.Holder = l.Token(), r.cfg.Holder
		if err := r.saveJob(j); err != nil {
			return j, err
		}
	}
	n := 0
	fn := r.resealFunc(j)
	for _, t := range r.cfg.Targets {
		if err := t.Reseal(ctx, func(tenant, record, purpose string, sealed []byte) ([]byte, bool, error) {
			out, changed, err := fn(tenant, record, purpose, sealed)
			if changed && err == nil {
				n++
				if n%64 == 0 {
					jj := j
					jj.Resealed += n
					if err := r.saveJob(jj); errors.Is(err, ErrLeaseLost) {
						return nil, false, err
					}
				}
				if r.cfg.OnReseal != nil {
					r.cfg.OnReseal(n)
				}
			}
			return out, changed, err
		}); err != nil {
			j.Resealed += n
			j.Error = err.Error()
			_ = r.saveJob(j)
			return j, err
		}
	}
	j.Resealed += n
	if j.Retired, err = r.finish(ctx); err != nil {
		j.Error = err.Error()
		_ = r.saveJob(j)
		return j, err
	}
	j.Phase, j.Finished, j.Error = phaseDone, r.cfg.Now().UTC(), ""
	if err := r.saveJob(j); err != nil {
		return j, err
	}
	r.cfg.Logger.Info("keystore: rotation finished", "kind", j.Kind, "tenant", j.Tenant, "resealed", j.Resealed,
		"retired_master_versions", fmt.Sprint(j.Retired))
	return j, nil
}

// versions are the current master key version and each tenant's current salt version.
type versions struct {
	master uint32
	salts  map[string]uint32
}

// current reads the current versions, the salts from the store.
func (r *Rotator) current() (versions, error) {
	ks := r.cfg.Keystore
	v := versions{master: ks.ring.Current(), salts: map[string]uint32{}}
	if ks.salts == nil {
		return v, nil
	}
	tenants, err := ks.salts.tenants()
	if err != nil {
		return v, err
	}
	for _, tenant := range tenants {
		ts, err := ks.salts.load(tenant)
		if err != nil {
			return v, err
		}
		v.salts[tenant] = ts.Current
	}
	return v, nil
}

// finish ends a job whose records are re-encrypted: it retires the versions no record uses any
// more, and returns the master versions retired. Seals begun before it may be under versions
// just superseded (a cached key, or a seal that raced a start): it waits until they are
// stored, so the usage scan sees them. A version superseded after that wait began (by another
// job's start, running beside this one) may still have a seal in flight that the wait did not
// cover, so only versions superseded before it are retired; that other job's finish retires
// the rest.
func (r *Rotator) finish(ctx context.Context) ([]uint32, error) {
	r.finishing.Lock()
	defer r.finishing.Unlock()
	before, err := r.current()
	if err != nil {
		return nil, err
	}
	for _, t := range r.cfg.Targets {
		if q, ok := t.(Quiescer); ok {
			q.Quiesce()
		}
	}
	use, err := r.Usage(ctx)
	if err != nil {
		return nil, err
	}
	return r.retire(ctx, use, before)
}

// resealFunc re-encrypts a value that is not under the current master version and the
// tenant's current salt (in a tenant job, only that tenant's values). The new ciphertext is
// opened and compared before it is handed back: nothing is written that does not round-trip.
func (r *Rotator) resealFunc(j Job) ResealFunc {
	ks := r.cfg.Keystore
	return func(tenant, record, purpose string, sealed []byte) ([]byte, bool, error) {
		if j.Kind == "tenant" && tenant != j.Tenant {
			return sealed, false, nil
		}
		h, err := ParseHeader(sealed)
		if err != nil {
			return nil, false, err
		}
		current := h.Master == ks.ring.Current()
		if ks.salts == nil {
			current = current && h.Format == format1
		} else {
			ts, err := ks.salts.forSeal(tenant)
			if err != nil {
				return nil, false, err
			}
			current = current && h.Format == format3 && h.Salt == ts.Current
		}
		if current {
			return sealed, false, nil
		}
		plain, err := ks.Open(tenant, record, purpose, sealed)
		if err != nil {
			return nil, false, err
		}
		defer clear(plain)
		out, err := ks.Seal(tenant, record, purpose, plain)
		if err != nil {
			return nil, false, err
		}
		check, err := ks.Open(tenant, record, purpose, out)
		ok := err == nil && subtle.ConstantTimeCompare(check, plain) == 1 && len(check) == len(plain)
		clear(check)
		if !ok {
			return nil, false, errors.New("keystore: re-encrypted value does not round-trip")
		}
		return out, true, nil
	}
}

// Usage counts, over every target, the records per master key version and per tenant salt
// version.
type Usage struct {
	Master map[uint32]int            `json:"master"`
	Salts  map[string]map[uint32]int `json:"salts"`
	Total  int                       `json:"total"`
}

// Usage scans every target (reading headers only).
func (r *Rotator) Usage(ctx context.Context) (Usage, error) {
	u := Usage{Master: map[uint32]int{}, Salts: map[string]map[uint32]int{}}
	for _, t := range r.cfg.Targets {
		err := t.Reseal(ctx, func(tenant, _, _ string, sealed []byte) ([]byte, bool, error) {
			h, err := ParseHeader(sealed)
			if err != nil {
				return nil, false, err
			}
			u.Total++
			u.Master[h.Master]++
			if h.Format != format1 {
				if u.Salts[tenant] == nil {
					u.Salts[tenant] = map[uint32]int{}
				}
				u.Salts[tenant][h.Salt]++
			}
			return sealed, false, nil
		})
		if err != nil {
			return Usage{}, err
		}
	}
	return u, nil
}

// retire removes the master key versions and tenant salt versions that no record uses and
// that were superseded already before (older than the versions current then).
func (r *Rotator) retire(ctx context.Context, use Usage, before versions) ([]uint32, error) {
	ks := r.cfg.Keystore
	var retired []uint32
	for _, v := range ks.ring.Versions() {
		if v >= before.master || use.Master[v] > 0 {
			continue
		}
		if rt, ok := r.cfg.Source.(MasterKeyRetirer); ok {
			if err := rt.Retire(ctx, v); err != nil {
				return retired, err
			}
		}
		if err := ks.ring.Remove(v); err != nil {
			return retired, err
		}
		ks.forget(v, "", 0)
		retired = append(retired, v)
	}
	if ks.salts == nil {
		return retired, nil
	}
	tenants, err := ks.salts.tenants()
	if err != nil {
		return retired, err
	}
	for _, tenant := range tenants {
		cur, ok := before.salts[tenant]
		if !ok {
			continue // a tenant whose first salt is newer than before
		}
		ts, err := ks.salts.load(tenant)
		if err != nil {
			return retired, err
		}
		// Salt versions only grow (a new one is the highest plus one), as master versions do.
		for _, v := range slices.Sorted(maps.Keys(ts.Versions)) {
			if v < cur && use.Salts[tenant][v] == 0 {
				if err := ks.RemoveTenantSalt(tenant, v); err != nil {
					return retired, err
				}
			}
		}
	}
	return retired, nil
}

// ValueTarget is a Target for one sealed value stored alone under Bucket/Key (such as the
// audit checkpoint signing key), sealed for Tenant, Record and Purpose. It is replaced with
// compare-and-swap, so a concurrent writer's value is never overwritten with an older one.
type ValueTarget struct {
	KV                      KV
	Bucket, Key             string
	Tenant, Record, Purpose string
}

// Reseal implements Target.
func (v ValueTarget) Reseal(ctx context.Context, fn ResealFunc) error {
	for range 16 {
		if err := ctx.Err(); err != nil {
			return err
		}
		sealed, err := v.KV.Get(v.Bucket, v.Key)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		out, changed, err := fn(v.Tenant, v.Record, v.Purpose, sealed)
		if err != nil {
			return fmt.Errorf("keystore: reseal %s/%s: %w", v.Bucket, v.Key, err)
		}
		if !changed {
			return nil
		}
		err = v.KV.Swap(v.Bucket, v.Key, sealed, out)
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("keystore: reseal %s/%s: %w", v.Bucket, v.Key, store.ErrConflict)
}
