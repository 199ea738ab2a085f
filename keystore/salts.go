package keystore

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/moltgate/moltgate/store"
)

// KV is the storage the keystore needs for tenant salts, key records and rotation state;
// store.Bolt and store.Redis implement it. Swap is an atomic compare-and-swap (nil old: must
// be absent; nil new: delete) returning store.ErrConflict on a mismatch.
type KV interface {
	Get(bucket, key string) ([]byte, error)
	Put(bucket, key string, value []byte) error
	Delete(bucket, key string) error
	ForEach(bucket string, fn func(key string, value []byte) error) error
	// ForEachPrefix is ForEach over the keys that start with prefix.
	ForEachPrefix(bucket, prefix string, fn func(key string, value []byte) error) error
	Swap(bucket, key string, old, new []byte) error
}

// Buckets the keystore owns in the KV store.
const (
	saltsBucket = "keystore.salts"
	saltSize    = 32
)

// TenantSalts are one tenant's HKDF salts by version. Salts are not secret (HKDF's security
// does not rest on them) but they make every tenant's keys independent of every other's even
// under the same master key, and a new salt version rotates all of a tenant's keys.
type TenantSalts struct {
	Current  uint32            `json:"current"`
	Versions map[uint32][]byte `json:"versions"`
}

func (t *TenantSalts) clone() *TenantSalts {
	return &TenantSalts{Current: t.Current, Versions: maps.Clone(t.Versions)}
}

// saltStore caches tenant salts from the KV store. A version it does not know is re-read from
// the store, since another replica may have rotated the tenant.
type saltStore struct {
	kv  KV
	gen atomic.Uint64 // bumped when any tenant's current salt changes

	mu     sync.RWMutex
	tenant map[string]*TenantSalts
	raw    map[string][]byte // stored bytes, for Swap
}

func newSaltStore(kv KV) *saltStore {
	return &saltStore{kv: kv, tenant: map[string]*TenantSalts{}, raw: map[string][]byte{}}
}

// forSeal returns the tenant's salts, creating version 1 on the tenant's first seal.
func (s *saltStore) forSeal(tenant string) (*TenantSalts, error) {
	s.mu.RLock()
	ts, ok := s.tenant[tenant]
	s.mu.RUnlock()
	if ok {
		return ts, nil
	}
	ts, err := s.load(tenant)
	if err == nil {
		return ts, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	fresh := &TenantSalts{Current: 1, Versions: map[uint32][]byte{1: newSalt()}}
	v, _ := json.Marshal(fresh)
	// Swap from absent: two replicas sealing a new tenant's first secret at once agree on one salt.
	if err := s.kv.Swap(saltsBucket, tenant, nil, v); err != nil && !errors.Is(err, store.ErrConflict) {
		return nil, fmt.Errorf("keystore: create salt of tenant %q: %w", tenant, err)
	}
	return s.load(tenant)
}

// salt returns one version of the tenant's salt.
func (s *saltStore) salt(tenant string, version uint32) ([]byte, error) {
	s.mu.RLock()
	ts, ok := s.tenant[tenant]
	s.mu.RUnlock()
	if ok {
		if b, ok := ts.Versions[version]; ok {
			return b, nil
		}
	}
	ts, err := s.load(tenant)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("%w: no salt for tenant", ErrUnknownVersion)
		}
		return nil, err
	}
	if b, ok := ts.Versions[version]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("%w: tenant salt %d", ErrUnknownVersion, version)
}

// load reads the tenant's salts from the store into the cache.
func (s *saltStore) load(tenant string) (*TenantSalts, error) {
	v, err := s.kv.Get(saltsBucket, tenant)
	if err != nil {
		return nil, err
	}
	var ts TenantSalts
	if err := json.Unmarshal(v, &ts); err != nil || ts.Versions[ts.Current] == nil {
		return nil, fmt.Errorf("keystore: salt record of tenant %q is corrupt", tenant)
	}
	s.mu.Lock()
	if old, ok := s.tenant[tenant]; !ok || old.Current != ts.Current {
		s.gen.Add(1)
	}
	s.tenant[tenant], s.raw[tenant] = &ts, v
	s.mu.Unlock()
	return &ts, nil
}

// change applies fn to a copy of the tenant's stored salts and writes it with Swap,
// retrying on a concurrent change.
func (s *saltStore) change(tenant string, fn func(*TenantSalts) error) (*TenantSalts, error) {
	for range 16 {
		if _, err := s.forSeal(tenant); err != nil {
			return nil, err
		}
		s.mu.RLock()
		ts, raw := s.tenant[tenant].clone(), s.raw[tenant]
		s.mu.RUnlock()
		if err := fn(ts); err != nil {
			return nil, err
		}
		v, _ := json.Marshal(ts)
		err := s.kv.Swap(saltsBucket, tenant, raw, v)
		if errors.Is(err, store.ErrConflict) {
			if _, err := s.load(tenant); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("keystore: salts of tenant %q: %w", tenant, err)
		}
		return s.load(tenant)
	}
	return nil, fmt.Errorf("keystore: salts of tenant %q: %w", tenant, store.ErrConflict)
}

// tenants lists every tenant with salts.
func (s *saltStore) tenants() ([]string, error) {
	var out []string
	err := s.kv.ForEach(saltsBucket, func(k string, _ []byte) error { out = append(out, k); return nil })
	return out, err
}

func newSalt() []byte {
	b := make([]byte, saltSize)
	rand.Read(b)
	return b
}

// Changed brings the cached salts of a tenant up to date with a change of the store that
// may have been made elsewhere (another replica rotating the tenant). Changes of other
// buckets are ignored.
func (k *Keystore) Changed(bucket, tenant string) error {
	if bucket != saltsBucket || k.salts == nil {
		return nil
	}
	_, err := k.salts.load(tenant)
	if errors.Is(err, store.ErrNotFound) {
		k.salts.mu.Lock()
		delete(k.salts.tenant, tenant)
		delete(k.salts.raw, tenant)
		k.salts.mu.Unlock()
		err = nil
	}
	k.forget(0, "", 0)
	return err
}

// TenantSalts returns the tenant's salt versions (creating the first), for status and tests.
func (k *Keystore) TenantSalts(tenant string) (*TenantSalts, error) {
	if k.salts == nil {
		return nil, errors.New("keystore: no tenant salts (format 1 keystore)")
	}
	ts, err := k.salts.forSeal(tenant)
	if err != nil {
		return nil, err
	}
	return ts.clone(), nil
}

// AddTenantSalt makes a new salt version current for tenant: every seal for the tenant from
// now on uses new keys. Rotation then re-encrypts the tenant's records under it.
func (k *Keystore) AddTenantSalt(tenant string) (uint32, error) {
	if k.salts == nil {
		return 0, errors.New("keystore: no tenant salts (format 1 keystore)")
	}
	ts, err := k.salts.change(tenant, func(ts *TenantSalts) error {
		next := slices.Max(slices.Collect(maps.Keys(ts.Versions))) + 1
		ts.Versions[next], ts.Current = newSalt(), next
		return nil
	})
	if err != nil {
		return 0, err
	}
	k.forget(0, "", 0)
	return ts.Current, nil
}

// RemoveTenantSalt retires a salt version of tenant that no record uses any more. The caller
// (rotation) has checked that; the current version cannot be removed.
func (k *Keystore) RemoveTenantSalt(tenant string, version uint32) error {
	if k.salts == nil {
		return errors.New("keystore: no tenant salts (format 1 keystore)")
	}
	_, err := k.salts.change(tenant, func(ts *TenantSalts) error {
		if version == ts.Current {
			return fmt.Errorf("keystore: salt %d of tenant %q is current", version, tenant)
		}
		delete(ts.Versions, version)
		return nil
	})
	if err != nil {
		return err
	}
	k.forget(0, tenant, version)
	return nil
}
