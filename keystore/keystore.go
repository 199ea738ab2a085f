package keystore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// Errors returned by Open. None of them carries key or plaintext material.
var (
	// ErrOpen means the ciphertext failed authentication: tampered, truncated, or sealed for
	// another tenant, record, purpose or key.
	ErrOpen = errors.New("keystore: ciphertext does not open")
	// ErrMalformed means the input is not a keystore ciphertext at all.
	ErrMalformed = errors.New("keystore: malformed ciphertext")
	// ErrUnknownVersion means the master key version named in the ciphertext is not loaded.
	ErrUnknownVersion = errors.New("keystore: unknown master key version")
)

// KeySize is the size of a master key and of a derived tenant key: AES-256.
const KeySize = 32

// format1 is the first byte of every ciphertext: format, then the 4-byte big-endian master key
// version, the 12-byte nonce and the GCM output.
const format1 = 1

const headerSize = 1 + 4 + 12

// Keyring holds master key versions; the highest is used to seal.
type Keyring struct {
	keys    map[uint32][]byte
	current uint32
}

// NewKeyring returns a keyring with one master key as version.
func NewKeyring(version uint32, key []byte) (*Keyring, error) {
	r := &Keyring{keys: map[uint32][]byte{}}
	if err := r.Add(version, key); err != nil {
		return nil, err
	}
	return r, nil
}

// Add loads another master key version; the highest version loaded seals new records.
func (r *Keyring) Add(version uint32, key []byte) error {
	if version == 0 {
		return errors.New("keystore: master key version must be at least 1")
	}
	if len(key) != KeySize {
		return fmt.Errorf("keystore: master key version %d: %d bytes, want %d", version, len(key), KeySize)
	}
	if _, dup := r.keys[version]; dup {
		return fmt.Errorf("keystore: master key version %d loaded twice", version)
	}
	r.keys[version] = append([]byte(nil), key...)
	r.current = max(r.current, version)
	return nil
}

// Current is the version that seals new records.
func (r *Keyring) Current() uint32 { return r.current }

// Keystore seals and opens secrets. It is safe for concurrent use; derived tenant keys are
// cached so a seal or open costs one AES-GCM operation.
type Keystore struct {
	ring *Keyring

	mu      sync.RWMutex
	derived map[derivedKey]cipher.AEAD
}

type derivedKey struct {
	version         uint32
	tenant, purpose string
}

// New returns a Keystore over ring. The ring must not be changed afterwards.
func New(ring *Keyring) *Keystore {
	return &Keystore{ring: ring, derived: map[derivedKey]cipher.AEAD{}}
}

// Seal encrypts plaintext for tenant's record under purpose with the current master key.
func (k *Keystore) Seal(tenant, record, purpose string, plaintext []byte) ([]byte, error) {
	version := k.ring.current
	aead, err := k.aead(version, tenant, purpose)
	if err != nil {
		return nil, err
	}
	out := make([]byte, headerSize, headerSize+len(plaintext)+aead.Overhead())
	out[0] = format1
	binary.BigEndian.PutUint32(out[1:5], version)
	if _, err := rand.Read(out[5:headerSize]); err != nil {
		return nil, fmt.Errorf("keystore: nonce: %w", err)
	}
	ad := additionalData(tenant, record, purpose, version)
	return aead.Seal(out, out[5:headerSize], plaintext, ad), nil
}

// Open decrypts a ciphertext made by Seal for the same tenant, record and purpose. On any
// failure it returns no plaintext.
func (k *Keystore) Open(tenant, record, purpose string, sealed []byte) ([]byte, error) {
	if len(sealed) < headerSize+16 || sealed[0] != format1 {
		return nil, ErrMalformed
	}
	version := binary.BigEndian.Uint32(sealed[1:5])
	aead, err := k.aead(version, tenant, purpose)
	if err != nil {
		return nil, err
	}
	ad := additionalData(tenant, record, purpose, version)
	plain, err := aead.Open(nil, sealed[5:headerSize], sealed[headerSize:], ad)
	if err != nil {
		return nil, ErrOpen
	}
	return plain, nil
}

// Version reports the master key version a ciphertext was sealed with.
func Version(sealed []byte) (uint32, error) {
	if len(sealed) < headerSize || sealed[0] != format1 {
		return 0, ErrMalformed
	}
	return binary.BigEndian.Uint32(sealed[1:5]), nil
}

func (k *Keystore) aead(version uint32, tenant, purpose string) (cipher.AEAD, error) {
	id := derivedKey{version, tenant, purpose}
	k.mu.RLock()
	a, ok := k.derived[id]
	k.mu.RUnlock()
	if ok {
		return a, nil
	}
	master, ok := k.ring.keys[version]
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrUnknownVersion, version)
	}
	key, err := DeriveKey(master, tenant, purpose)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	clear(key)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	a, err = cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	k.mu.Lock()
	k.derived[id] = a
	k.mu.Unlock()
	return a, nil
}

// DeriveKey is the tenant key: HKDF-SHA256 of the master key with an info string naming tenant
// and purpose, so no two tenants (or purposes) ever share a key.
func DeriveKey(master []byte, tenant, purpose string) ([]byte, error) {
	info := "moltgate/v1/tenant-key\x00" + tenant + "\x00" + purpose
	key, err := hkdf.Key(sha256.New, master, nil, info, KeySize)
	if err != nil {
		return nil, fmt.Errorf("keystore: derive: %w", err)
	}
	return key, nil
}

// additionalData binds a ciphertext to its tenant, record, purpose and key version, so one
// copied into another tenant's or record's place does not open (a swap attack).
func additionalData(tenant, record, purpose string, version uint32) []byte {
	ad := make([]byte, 0, 32+len(tenant)+len(record)+len(purpose))
	ad = append(ad, "moltgate/v1/ad\x00"...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(tenant)))
	ad = append(ad, tenant...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(record)))
	ad = append(ad, record...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(purpose)))
	ad = append(ad, purpose...)
	return binary.BigEndian.AppendUint32(ad, version)
}
