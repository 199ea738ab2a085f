package keystore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
)

// Errors returned by Open. None of them carries key or plaintext material.
var (
	// ErrOpen means the ciphertext failed authentication: tampered, truncated, or sealed for
	// another tenant, record, purpose or key.
	ErrOpen = errors.New("keystore: ciphertext does not open")
	// ErrMalformed means the input is not a keystore ciphertext at all.
	ErrMalformed = errors.New("keystore: malformed ciphertext")
	// ErrUnknownVersion means the master key version (or tenant salt version) named in the
	// ciphertext is not loaded.
	ErrUnknownVersion = errors.New("keystore: unknown key version")
)

// KeySize is the size of a master key and of a derived tenant key: AES-256.
const KeySize = 32

// Ciphertext formats; the first byte of every ciphertext.
//
//	format 1: 1 | master version (4, big-endian) | nonce (12) | GCM ciphertext and tag
//	          key = HKDF-SHA256(master, salt nil, info "moltgate/v1/tenant-key\0"+tenant+"\0"+purpose)
//	format 2: 2 | master version (4) | tenant salt version (4) | nonce (12) | GCM ciphertext and tag
//	          key = HKDF-SHA256(master, salt = the tenant's random 32-byte salt of that version,
//	                info "moltgate/v2/tenant-key" + len-prefixed tenant and purpose)
//
// Format 1 is what the first keystore wrote; it still opens, and rotation rewrites it as
// format 2. A Keystore with a salt store seals format 2.
const (
	format1 = 1
	format2 = 2

	headerSize  = 1 + 4 + 12
	header2Size = 1 + 4 + 4 + 12
	nonceSize   = 12
	tagSize     = 16
)

// Keyring holds master key versions; the highest is used to seal. It is safe for concurrent
// use: rotation adds a version while requests seal and open.
type Keyring struct {
	mu      sync.RWMutex
	keys    map[uint32][]byte
	current atomic.Uint32
	gen     atomic.Uint64 // bumped on every change, so caches of "the current key" notice
}

// NewKeyring returns a keyring with one master key as version.
func NewKeyring(version uint32, key []byte) (*Keyring, error) {
	r := &Keyring{keys: map[uint32][]byte{}}
	if err := r.Add(version, key); err != nil {
		return nil, err
	}
	return r, nil
}

// NewKeyringFrom returns a keyring holding every version in keys (at least one).
func NewKeyringFrom(keys map[uint32]Secret) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("keystore: no master key versions")
	}
	r := &Keyring{keys: map[uint32][]byte{}}
	for _, v := range slices.Sorted(maps.Keys(keys)) {
		if err := r.Add(v, keys[v]); err != nil {
			return nil, err
		}
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
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.keys[version]; dup {
		return fmt.Errorf("keystore: master key version %d loaded twice", version)
	}
	r.keys[version] = append([]byte(nil), key...)
	if version > r.current.Load() {
		r.current.Store(version)
	}
	r.gen.Add(1)
	return nil
}

// Remove unloads a retired version and clears its key from memory. The current version
// cannot be removed.
func (r *Keyring) Remove(version uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if version == r.current.Load() {
		return fmt.Errorf("keystore: master key version %d is current", version)
	}
	k, ok := r.keys[version]
	if !ok {
		return fmt.Errorf("%w: master %d", ErrUnknownVersion, version)
	}
	clear(k)
	delete(r.keys, version)
	r.gen.Add(1)
	return nil
}

// Current is the version that seals new records.
func (r *Keyring) Current() uint32 { return r.current.Load() }

// Versions lists the loaded versions in ascending order.
func (r *Keyring) Versions() []uint32 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Sorted(maps.Keys(r.keys))
}

// key returns a copy of version's key; the caller clears it.
func (r *Keyring) key(version uint32) ([]byte, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	k, ok := r.keys[version]
	if !ok {
		return nil, false
	}
	return append([]byte(nil), k...), true
}

// Keystore seals and opens secrets. It is safe for concurrent use; derived tenant keys are
// cached so a seal or open costs one AES-GCM operation and two map look-ups.
type Keystore struct {
	ring  *Keyring
	salts *saltStore // nil: seal format 1, without per-tenant salts

	mu      sync.RWMutex
	derived map[derivedKey]cipher.AEAD
	sealers map[sealerKey]sealer // the current key per tenant and purpose
}

type derivedKey struct {
	format          byte
	version, salt   uint32
	tenant, purpose string
}

type sealerKey struct{ tenant, purpose string }

// sealer is the key new seals use, valid while the keyring generation and salt generation
// it was made under are unchanged.
type sealer struct {
	ringGen, saltGen uint64
	version, salt    uint32
	aead             cipher.AEAD
}

// New returns a Keystore over ring that seals format 1 (no per-tenant salt). It exists for
// stores written before tenant salts; NewWithSalts is the one to use.
func New(ring *Keyring) *Keystore {
	return &Keystore{ring: ring, derived: map[derivedKey]cipher.AEAD{}, sealers: map[sealerKey]sealer{}}
}

// NewWithSalts returns a Keystore over ring that seals format 2: each tenant's keys are
// derived with that tenant's random salt, kept in kv (bucket "keystore.salts", created on a
// tenant's first seal). Rotating a tenant's salt rotates all of that tenant's keys.
func NewWithSalts(ring *Keyring, kv KV) *Keystore {
	k := New(ring)
	k.salts = newSaltStore(kv)
	return k
}

// Ring is the keyring the Keystore uses.
func (k *Keystore) Ring() *Keyring { return k.ring }

// Seal encrypts plaintext for tenant's record under purpose with the current master key (and,
// with salts, the tenant's current salt).
func (k *Keystore) Seal(tenant, record, purpose string, plaintext []byte) ([]byte, error) {
	s, err := k.sealer(tenant, purpose)
	if err != nil {
		return nil, err
	}
	if k.salts == nil {
		out := make([]byte, headerSize, headerSize+len(plaintext)+tagSize)
		out[0] = format1
		binary.BigEndian.PutUint32(out[1:5], s.version)
		nonce := out[5:headerSize]
		rand.Read(nonce) // never returns an error (crypto/rand since Go 1.24)
		return s.aead.Seal(out, nonce, plaintext, additionalData(tenant, record, purpose, s.version)), nil
	}
	out := make([]byte, header2Size, header2Size+len(plaintext)+tagSize)
	out[0] = format2
	binary.BigEndian.PutUint32(out[1:5], s.version)
	binary.BigEndian.PutUint32(out[5:9], s.salt)
	nonce := out[9:header2Size]
	rand.Read(nonce)
	adp := adPool.Get().(*[]byte)
	*adp = appendAD2((*adp)[:0], tenant, record, purpose, s.version, s.salt)
	out = s.aead.Seal(out, nonce, plaintext, *adp)
	adPool.Put(adp)
	return out, nil
}

// adPool recycles additional-data buffers: the binding is rebuilt for every seal and open,
// and allocating it was a sixth of the cost of opening a small secret.
var adPool = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// Open decrypts a ciphertext made by Seal for the same tenant, record and purpose. On any
// failure it returns no plaintext.
func (k *Keystore) Open(tenant, record, purpose string, sealed []byte) ([]byte, error) {
	h, err := ParseHeader(sealed)
	if err != nil {
		return nil, err
	}
	if len(sealed) < h.size()+tagSize {
		return nil, ErrMalformed
	}
	aead, err := k.aead(h, tenant, purpose)
	if err != nil {
		return nil, err
	}
	adp := adPool.Get().(*[]byte)
	if h.Format == format1 {
		*adp = appendAD((*adp)[:0], tenant, record, purpose, h.Master)
	} else {
		*adp = appendAD2((*adp)[:0], tenant, record, purpose, h.Master, h.Salt)
	}
	n := h.size()
	plain, err := aead.Open(nil, sealed[n-nonceSize:n], sealed[n:], *adp)
	adPool.Put(adp)
	if err != nil {
		return nil, ErrOpen
	}
	return plain, nil
}

// Header is what a ciphertext says about the keys that sealed it.
type Header struct {
	Format byte
	// Master is the master key version.
	Master uint32
	// Salt is the tenant salt version (format 2; 0 for format 1).
	Salt uint32
}

func (h Header) size() int {
	if h.Format == format1 {
		return headerSize
	}
	return header2Size
}

// ParseHeader reads a ciphertext's header without opening it.
func ParseHeader(sealed []byte) (Header, error) {
	switch {
	case len(sealed) >= headerSize && sealed[0] == format1:
		return Header{Format: format1, Master: binary.BigEndian.Uint32(sealed[1:5])}, nil
	case len(sealed) >= header2Size && sealed[0] == format2:
		return Header{Format: format2, Master: binary.BigEndian.Uint32(sealed[1:5]), Salt: binary.BigEndian.Uint32(sealed[5:9])}, nil
	}
	return Header{}, ErrMalformed
}

// Version reports the master key version a ciphertext was sealed with.
func Version(sealed []byte) (uint32, error) {
	h, err := ParseHeader(sealed)
	return h.Master, err
}

// sealer returns the current key for tenant and purpose from cache, deriving it when the
// keyring or the tenant's salts changed since.
func (k *Keystore) sealer(tenant, purpose string) (sealer, error) {
	id := sealerKey{tenant, purpose}
	ringGen := k.ring.gen.Load()
	var saltGen uint64
	if k.salts != nil {
		saltGen = k.salts.gen.Load()
	}
	k.mu.RLock()
	s, ok := k.sealers[id]
	k.mu.RUnlock()
	if ok && s.ringGen == ringGen && s.saltGen == saltGen {
		return s, nil
	}
	h := Header{Format: format1, Master: k.ring.Current()}
	if k.salts != nil {
		ts, err := k.salts.forSeal(tenant)
		if err != nil {
			return sealer{}, err
		}
		h.Format, h.Salt = format2, ts.Current
	}
	aead, err := k.aead(h, tenant, purpose)
	if err != nil {
		return sealer{}, err
	}
	s = sealer{ringGen: ringGen, saltGen: saltGen, version: h.Master, salt: h.Salt, aead: aead}
	k.mu.Lock()
	k.sealers[id] = s
	k.mu.Unlock()
	return s, nil
}

func (k *Keystore) aead(h Header, tenant, purpose string) (cipher.AEAD, error) {
	id := derivedKey{h.Format, h.Master, h.Salt, tenant, purpose}
	k.mu.RLock()
	a, ok := k.derived[id]
	k.mu.RUnlock()
	if ok {
		return a, nil
	}
	gen := k.ring.gen.Load() // a Remove after this must not find its version cached below
	master, ok := k.ring.key(h.Master)
	if !ok {
		return nil, fmt.Errorf("%w: master %d", ErrUnknownVersion, h.Master)
	}
	defer clear(master)
	var key []byte
	var err error
	if h.Format == format1 {
		key, err = DeriveKey(master, tenant, purpose)
	} else {
		if k.salts == nil {
			return nil, fmt.Errorf("%w: format 2 needs tenant salts", ErrUnknownVersion)
		}
		salt, serr := k.salts.salt(tenant, h.Salt)
		if serr != nil {
			return nil, serr
		}
		key, err = DeriveTenantKey(master, salt, tenant, purpose)
	}
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
	if k.ring.gen.Load() == gen { // else the keyring changed meanwhile: forget may have run
		k.derived[id] = a
	}
	k.mu.Unlock()
	return a, nil
}

// forget drops cached keys of a retired master version (0: none) or of one tenant's retired
// salt version.
func (k *Keystore) forget(master uint32, tenant string, salt uint32) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for id := range k.derived {
		if master != 0 && id.version == master || tenant != "" && id.tenant == tenant && id.salt == salt {
			delete(k.derived, id)
		}
	}
	clear(k.sealers)
}

// Fingerprint identifies a secret without revealing it: the first 8 bytes, in hex, of
// HMAC-SHA256 under a key derived for tenant. A plain hash of a low-entropy key could be
// brute-forced offline; this one needs the master key.
func (k *Keystore) Fingerprint(tenant string, secret []byte) (string, error) {
	version := k.ring.Current()
	master, ok := k.ring.key(version)
	if !ok {
		return "", fmt.Errorf("%w: master %d", ErrUnknownVersion, version)
	}
	defer clear(master)
	var salt []byte
	if k.salts != nil {
		ts, err := k.salts.forSeal(tenant)
		if err != nil {
			return "", err
		}
		salt = ts.Versions[ts.Current]
	}
	key, err := DeriveTenantKey(master, salt, tenant, "fingerprint")
	if err != nil {
		return "", err
	}
	defer clear(key)
	m := hmac.New(sha256.New, key)
	m.Write(secret)
	return hex.EncodeToString(m.Sum(nil)[:8]), nil
}

// DeriveKey is the format-1 tenant key: HKDF-SHA256 of the master key with an info string
// naming tenant and purpose, so no two tenants (or purposes) ever share a key.
func DeriveKey(master []byte, tenant, purpose string) ([]byte, error) {
	info := "moltgate/v1/tenant-key\x00" + tenant + "\x00" + purpose
	key, err := hkdf.Key(sha256.New, master, nil, info, KeySize)
	if err != nil {
		return nil, fmt.Errorf("keystore: derive: %w", err)
	}
	return key, nil
}

// DeriveTenantKey is the format-2 tenant key: HKDF-SHA256 (RFC 5869) with the master key as
// input key material, the tenant's random salt as salt, and an info string with tenant and
// purpose length-prefixed, so no choice of names can make two contexts collide.
func DeriveTenantKey(master, salt []byte, tenant, purpose string) ([]byte, error) {
	key, err := hkdf.Key(sha256.New, master, salt, string(tenantKeyInfo(tenant, purpose)), KeySize)
	if err != nil {
		return nil, fmt.Errorf("keystore: derive: %w", err)
	}
	return key, nil
}

func tenantKeyInfo(tenant, purpose string) []byte {
	info := make([]byte, 0, 32+len(tenant)+len(purpose))
	info = append(info, "moltgate/v2/tenant-key"...)
	info = binary.BigEndian.AppendUint32(info, uint32(len(tenant)))
	info = append(info, tenant...)
	info = binary.BigEndian.AppendUint32(info, uint32(len(purpose)))
	return append(info, purpose...)
}

// additionalData binds a format-1 ciphertext to its tenant, record, purpose and key version,
// so one copied into another tenant's or record's place does not open (a swap attack).
func additionalData(tenant, record, purpose string, version uint32) []byte {
	return appendAD(make([]byte, 0, 32+len(tenant)+len(record)+len(purpose)), tenant, record, purpose, version)
}

func appendAD(ad []byte, tenant, record, purpose string, version uint32) []byte {
	ad = append(ad, "moltgate/v1/ad\x00"...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(tenant)))
	ad = append(ad, tenant...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(record)))
	ad = append(ad, record...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(purpose)))
	ad = append(ad, purpose...)
	return binary.BigEndian.AppendUint32(ad, version)
}

// additionalData2 is the format-2 binding: as format 1, plus the tenant salt version, under a
// different label so a format-1 binding can never equal a format-2 one.
func additionalData2(tenant, record, purpose string, version, salt uint32) []byte {
	return appendAD2(make([]byte, 0, 40+len(tenant)+len(record)+len(purpose)), tenant, record, purpose, version, salt)
}

func appendAD2(ad []byte, tenant, record, purpose string, version, salt uint32) []byte {
	ad = append(ad, "moltgate/v2/ad"...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(tenant)))
	ad = append(ad, tenant...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(record)))
	ad = append(ad, record...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(purpose)))
	ad = append(ad, purpose...)
	ad = binary.BigEndian.AppendUint32(ad, version)
	return binary.BigEndian.AppendUint32(ad, salt)
}
