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
	"time"

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

// Job is the rotation in progress (or the last one), stored in bucket "keystore.rotation"
// so a restarted process resumes it. Re-encryption needs no cursor: every ciphertext names
// the key versions that sealed it, so a resumed run skips, without decrypting, every record
// that is current already.
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
}

const (
	rotationBucket = "keystore.rotation"
	jobKey         = "job"
	phaseReencrypt = "reencrypt"
	phaseDone      = "done"
)

// RotatorConfig configures a Rotator.
type RotatorConfig struct {
	// Keystore whose keyring and tenant salts rotate. Required.
	Keystore *Keystore
	// KV holds the job record (and the tenant salts). Required.
	KV KV
	// Source makes new master key versions (MasterKeyAdder) and drops retired ones
	// (MasterKeyRetirer, optional). Required for master rotation.
	Source MasterKeySource
	// Targets hold the sealed records. Required.
	Targets []Target
	// Logger. Default: discard.
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// OnReseal, if set, is called each time a re-encrypted value is handed to its target to
	// store, with the count so far in this run (progress reporting; the crash test kills the
	// process from it, so kills land before, during and after the store's write).
	OnReseal func(n int)
}

// Rotator re-encrypts every sealed record under new keys in the background, resumable after a
// crash at any point, while reads and writes go on: at every moment each record opens, under
// its old version or its new one. Old versions are retired only when a full scan finds no
// record using them.
type Rotator struct {
	cfg  RotatorConfig
	wake chan struct{}
}

// NewRotator returns a Rotator.
func NewRotator(cfg RotatorConfig) (*Rotator, error) {
	if cfg.Keystore == nil || cfg.KV == nil || len(cfg.Targets) == 0 {
		return nil, errors.New("keystore: rotator: Keystore, KV and Targets are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Rotator{cfg: cfg, wake: make(chan struct{}, 1)}, nil
}

// ErrRotationBusy is returned when a rotation of another kind is still unfinished.
var ErrRotationBusy = errors.New("keystore: another rotation is unfinished")

// Job returns the current or last rotation job; ok is false if there never was one.
func (r *Rotator) Job() (Job, bool, error) {
	v, err := r.cfg.KV.Get(rotationBucket, jobKey)
	if errors.Is(err, store.ErrNotFound) {
		return Job{}, false, nil
	}
	if err != nil {
		return Job{}, false, err
	}
	var j Job
	if err := json.Unmarshal(v, &j); err != nil {
		return Job{}, false, fmt.Errorf("keystore: rotation job record corrupt: %w", err)
	}
	return j, true, nil
}

func (r *Rotator) saveJob(j Job) error {
	v, _ := json.Marshal(j)
	return r.cfg.KV.Put(rotationBucket, jobKey, v)
}

// StartMaster begins a master key rotation: a new version from the source becomes current
// (new seals use it at once), and a job to re-encrypt every record is recorded. If a master
// rotation is unfinished, it is resumed instead of starting another. Run (or RunJob) does the
// work.
func (r *Rotator) StartMaster(ctx context.Context) (Job, error) {
	if j, ok, err := r.Job(); err != nil {
		return Job{}, err
	} else if ok && j.Phase != phaseDone {
		if j.Kind != "master" {
			return j, ErrRotationBusy
		}
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
		if err := r.saveJob(j); err != nil {
			return Job{}, err
		}
		r.cfg.Logger.Info("keystore: master key rotation started to the newest loaded version", "master_version", j.Master)
		r.signal()
		return j, nil
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
	j := Job{Kind: "master", Master: v, Phase: phaseReencrypt, Started: r.cfg.Now().UTC()}
	if err := r.saveJob(j); err != nil {
		return Job{}, err
	}
	r.cfg.Logger.Info("keystore: master key rotation started", "master_version", v)
	r.signal()
	return j, nil
}

// StartTenant begins a rotation of tenant's keys: a new salt version becomes current and the
// tenant's records are re-encrypted under it.
func (r *Rotator) StartTenant(_ context.Context, tenant string) (Job, error) {
	if !tenantPattern.MatchString(tenant) {
		return Job{}, fmt.Errorf("%w: tenant %q", ErrKeyInvalid, tenant)
	}
	if j, ok, err := r.Job(); err != nil {
		return Job{}, err
	} else if ok && j.Phase != phaseDone {
		if j.Kind != "tenant" || j.Tenant != tenant {
			return j, ErrRotationBusy
		}
		r.signal()
		return j, nil
	}
	s, err := r.cfg.Keystore.AddTenantSalt(tenant)
	if err != nil {
		return Job{}, err
	}
	j := Job{Kind: "tenant", Tenant: tenant, Master: r.cfg.Keystore.ring.Current(), Salt: s, Phase: phaseReencrypt,
		Started: r.cfg.Now().UTC()}
	if err := r.saveJob(j); err != nil {
		return Job{}, err
	}
	r.cfg.Logger.Info("keystore: tenant key rotation started", "tenant", tenant, "salt_version", s)
	r.signal()
	return j, nil
}

func (r *Rotator) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run resumes an unfinished job at once, then runs each job started, until ctx ends. A failed
// job is logged and recorded in the job; it is retried at the next start or signal.
func (r *Rotator) Run(ctx context.Context) error {
	r.signal()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		}
		if _, err := r.RunJob(ctx); err != nil && ctx.Err() == nil {
			r.cfg.Logger.Error("keystore: rotation stopped; it resumes at the next start or rotate command", "err", err)
		}
	}
}

// RunJob runs the unfinished job, if any, to the end and returns it.
func (r *Rotator) RunJob(ctx context.Context) (Job, error) {
	j, ok, err := r.Job()
	if err != nil || !ok || j.Phase == phaseDone {
		return j, err
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
					_ = r.saveJob(jj)
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
	// Seals begun before this point may be under the old versions (a cached key, or a seal that
	// raced StartMaster); wait until they are stored, so the scan below sees them.
	for _, t := range r.cfg.Targets {
		if q, ok := t.(Quiescer); ok {
			q.Quiesce()
		}
	}
	use, err := r.Usage(ctx)
	if err != nil {
		return j, err
	}
	j.Retired, err = r.retire(ctx, use)
	if err != nil {
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

// retire removes master key versions below the current one and non-current tenant salts
// that no record uses.
func (r *Rotator) retire(ctx context.Context, use Usage) ([]uint32, error) {
	ks := r.cfg.Keystore
	var retired []uint32
	for _, v := range ks.ring.Versions() {
		if v >= ks.ring.Current() || use.Master[v] > 0 {
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
		ts, err := ks.salts.load(tenant)
		if err != nil {
			return retired, err
		}
		for _, v := range slices.Sorted(maps.Keys(ts.Versions)) {
			if v != ts.Current && use.Salts[tenant][v] == 0 {
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
