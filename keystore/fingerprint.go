package keystore

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/moltgate/moltgate/store"
)

// Each tenant's fingerprint key is 32 random bytes, created on the tenant's first key and
// stored sealed for the tenant like any secret, so rotation re-encrypts it with the rest
// and it never changes: the same secret shows the same fingerprint before and after any
// rotation. (A key derived from the current master and salt would change with them.)
const (
	fingerprintBucket  = "keystore.fingerprint"
	fingerprintRecord  = "fingerprint-key"
	fingerprintPurpose = "fingerprint"
)

// fingerprint identifies secret among tenant's keys without revealing it: the first 8 bytes,
// in hex, of HMAC-SHA256 under the tenant's fingerprint key. A plain hash of a low-entropy
// key could be guessed offline; this one needs the keystore.
func (m *Keys) fingerprint(tenant string, secret []byte) (string, error) {
	key, err := m.fingerprintKey(tenant)
	if err != nil {
		return "", err
	}
	defer clear(key)
	mac := hmac.New(sha256.New, key)
	mac.Write(secret)
	return hex.EncodeToString(mac.Sum(nil)[:8]), nil
}

// fingerprintKey opens tenant's fingerprint key, creating it on first use. The caller
// clears it.
func (m *Keys) fingerprintKey(tenant string) ([]byte, error) {
	ks := m.cfg.Keystore
	for range 16 {
		sealed, err := m.cfg.KV.Get(fingerprintBucket, tenant)
		if err == nil {
			key, err := ks.Open(tenant, fingerprintRecord, fingerprintPurpose, sealed)
			if err != nil {
				return nil, fmt.Errorf("keystore: fingerprint key of tenant %q: %w", tenant, err)
			}
			return key, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		key := make([]byte, KeySize)
		rand.Read(key)
		sealed, err = ks.Seal(tenant, fingerprintRecord, fingerprintPurpose, key)
		clear(key)
		if err != nil {
			return nil, err
		}
		// Create only if absent: two first keys of a tenant at once agree on one key.
		if err := m.cfg.KV.Swap(fingerprintBucket, tenant, nil, sealed); err != nil && !errors.Is(err, store.ErrConflict) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("keystore: fingerprint key of tenant %q: %w", tenant, store.ErrConflict)
}
