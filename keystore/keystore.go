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
//	          additional data = "moltgate/v1/ad\0" + len-prefixed tenant, record and purpose
//	                            + master version
//	format 2: 2 | master version (4) | tenant salt version (4) | nonce (12) | GCM ciphertext and tag
//	          key = HKDF-SHA256(master, salt = the tenant's random 32-byte salt of that version,
//	                info "moltgate/v2/tenant-key" + len-prefixed tenant and purpose)
//	          additional data = "moltgate/v2/ad" + len-prefixed tenant, record and purpose
//	                            + master version + salt version
//	format 3: as format 2 with byte 3, the same key, and
//	          additional data = context (16) + record, where context is the first 16 bytes of
//	                            SHA-256("moltgate/v3/ad" + len-prefixed tenant and purpose
//	                            + master version + salt version)
//
// (Lengths and versions are 4 bytes, big-endian.) Formats 1 and 2 are what earlier keystores
// wrote; they still open, and rotation rewrites them as format 3, which a Keystore with a
// salt store seals.
const (
	format1 = 1
	format2 = 2
	format3 = 3

	contextSize = 16

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

// Keystore seals and opens secrets. It is safe for concurrent use. Derived tenant keys are
// cached per tenant in lists that are replaced whole, never changed in place, so a seal or
// open takes no lock: one map look-up by tenant and a scan of that tenant's few keys.
type Keystore struct {
	ring  *Keyring
	salts *saltStore // nil: seal format 1, without per-tenant salts

	mu      sync.Mutex // serialises changes to the cache
	tenants tenantIndex
	forgets atomic.Uint64 // bumped by forget: a key derived before it must not be cached after
}

// tenantCache is one tenant's cached keys. Its lists are published whole under Keystore.mu.
type tenantCache struct {
	keys    atomic.Pointer[[]*derived]
	sealers atomic.Pointer[[]sealer] // the current key per purpose
}

// derived is a tenant key ready to use.
type derived struct {
	format       byte
	master, salt uint32
	purpose      string
	aead         cipher.AEAD
	// context is format 3's additional-data prefix, binding tenant, purpose and key versions.
	context [contextSize]byte
	// last is the additional data of the record this key last sealed or opened: a tenant's
	// credential is opened for request after request, and rebuilding its binding each time
	// was a third of the keystore's cost over raw AES-GCM.
	last atomic.Pointer[binding]
}

// is reports whether d is the key of ciphertexts with header h for purpose.
func (d *derived) is(h Header, purpose string) bool {
	return d.master == h.Master && d.salt == h.Salt && d.format == h.Format && d.purpose == purpose
}

// binding is a record's additional data under one key (and so one tenant). It is never
// changed once stored.
type binding struct {
	record string
	ad     []byte
}

// ad returns the additional data of tenant's record under d, tenant's key.
func (d *derived) ad(tenant, record string) []byte {
	if b := d.last.Load(); b != nil && b.record == record {
		return b.ad
	}
	b := &binding{record: record, ad: d.appendAD(nil, tenant, record)}
	d.last.Store(b)
	return b.ad
}

// sealer is the key new seals use, valid while the keyring generation and salt generation
// it was made under are unchanged.
type sealer struct {
	ringGen, saltGen uint64
	purpose          string
	key              *derived
}

// New returns a Keystore over ring that seals format 1 (no per-tenant salt). It exists for
// stores written before tenant salts; NewWithSalts is the one to use.
func New(ring *Keyring) *Keystore {
	return &Keystore{ring: ring}
}

// NewWithSalts returns a Keystore over ring that seals format 3: each tenant's keys are
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
	d, err := k.sealer(tenant, purpose)
	if err != nil {
		return nil, err
	}
	h := Header{Format: d.format, Master: d.master, Salt: d.salt}
	n := h.size()
	out := make([]byte, n, n+len(plaintext)+tagSize)
	out[0] = h.Format
	binary.BigEndian.PutUint32(out[1:5], h.Master)
	if h.Format != format1 {
		binary.BigEndian.PutUint32(out[5:9], h.Salt)
	}
	nonce := out[n-nonceSize : n]
	rand.Read(nonce) // never returns an error (crypto/rand since Go 1.24)
	return d.aead.Seal(out, nonce, plaintext, d.ad(tenant, record)), nil
}

// Open decrypts a ciphertext made by Seal for the same tenant, record and purpose. On any
// failure it returns no plaintext.
func (k *Keystore) Open(tenant, record, purpose string, sealed []byte) ([]byte, error) {
	h, err := ParseHeader(sealed)
	if err != nil {
		return nil, err
	}
	n := h.size()
	if len(sealed) < n+tagSize {
		return nil, ErrMalformed
	}
	d, err := k.key(h, tenant, purpose)
	if err != nil {
		return nil, err
	}
	plain, err := d.aead.Open(nil, sealed[n-nonceSize:n], sealed[n:], d.ad(tenant, record))
	if err != nil {
		return nil, ErrOpen
	}
	return plain, nil
}

// appendAD appends the additional data of a ciphertext for tenant's record sealed with d.
func (d *derived) appendAD(ad []byte, tenant, record string) []byte {
	switch d.format {
	case format1:
		return appendAD(ad, tenant, record, d.purpose, d.master)
	case format2:
		return appendAD2(ad, tenant, record, d.purpose, d.master, d.salt)
	}
	return append(append(ad, d.context[:]...), record...)
}

// Header is what a ciphertext says about the keys that sealed it.
type Header struct {
	Format byte
	// Master is the master key version.
	Master uint32
	// Salt is the tenant salt version (formats 2 and 3; 0 for format 1).
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
	case len(sealed) >= header2Size && (sealed[0] == format2 || sealed[0] == format3):
		return Header{Format: sealed[0], Master: binary.BigEndian.Uint32(sealed[1:5]), Salt: binary.BigEndian.Uint32(sealed[5:9])}, nil
	}
	return Header{}, ErrMalformed
}

// Version reports the master key version a ciphertext was sealed with.
func Version(sealed []byte) (uint32, error) {
	h, err := ParseHeader(sealed)
	return h.Master, err
}

// sealFormat is the format new seals use.
func (k *Keystore) sealFormat() byte {
	if k.salts == nil {
		return format1
	}
	return format3
}

// sealer returns the current key for tenant and purpose from cache, deriving it when the
// keyring or the tenant's salts changed since.
func (k *Keystore) sealer(tenant, purpose string) (*derived, error) {
	ringGen := k.ring.gen.Load()
	var saltGen uint64
	if k.salts != nil {
		saltGen = k.salts.gen.Load()
	}
	if c := k.tenants.load(tenant); c != nil {
		if l := c.sealers.Load(); l != nil {
			for _, s := range *l {
				if s.purpose == purpose && s.ringGen == ringGen && s.saltGen == saltGen {
					return s.key, nil
				}
			}
		}
	}
	h := Header{Format: k.sealFormat(), Master: k.ring.Current()}
	if k.salts != nil {
		ts, err := k.salts.forSeal(tenant)
		if err != nil {
			return nil, err
		}
		h.Salt = ts.Current
	}
	d, err := k.key(h, tenant, purpose)
	if err != nil {
		return nil, err
	}
	k.change(tenant, func(c *tenantCache) {
		var l []sealer
		if old := c.sealers.Load(); old != nil {
			l = slices.DeleteFunc(slices.Clone(*old), func(s sealer) bool { return s.purpose == purpose })
		}
		l = append(l, sealer{ringGen: ringGen, saltGen: saltGen, purpose: purpose, key: d})
		c.sealers.Store(&l)
	})
	return d, nil
}

// key returns the key of a ciphertext with header h for tenant and purpose, from cache or
// derived.
func (k *Keystore) key(h Header, tenant, purpose string) (*derived, error) {
	if c := k.tenants.load(tenant); c != nil {
		if l := c.keys.Load(); l != nil {
			for _, d := range *l {
				if d.is(h, purpose) {
					return d, nil
				}
			}
		}
	}
	// A master or salt version retired after this must not find its key cached below.
	gen, forgets := k.ring.gen.Load(), k.forgets.Load()
	d, err := k.derive(h, tenant, purpose)
	if err != nil {
		return nil, err
	}
	k.change(tenant, func(c *tenantCache) {
		if k.ring.gen.Load() != gen || k.forgets.Load() != forgets {
			return // the keyring or a tenant's salts changed meanwhile: forget may have run
		}
		var l []*derived
		if old := c.keys.Load(); old != nil {
			if slices.ContainsFunc(*old, func(o *derived) bool { return o.is(h, purpose) }) {
				return // derived concurrently by another caller
			}
			l = slices.Clone(*old)
		}
		l = append(l, d)
		c.keys.Store(&l)
	})
	return d, nil
}

// change runs fn on tenant's cache (created if need be) under the cache lock.
func (k *Keystore) change(tenant string, fn func(*tenantCache)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	fn(k.tenants.loadOrCreate(tenant))
}

// derive makes the key of a ciphertext with header h for tenant and purpose.
func (k *Keystore) derive(h Header, tenant, purpose string) (*derived, error) {
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
			return nil, fmt.Errorf("%w: format %d needs tenant salts", ErrUnknownVersion, h.Format)
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
	a, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	d := &derived{format: h.Format, master: h.Master, salt: h.Salt, purpose: purpose, aead: a}
	if h.Format == format3 {
		d.context = adContext(tenant, purpose, h.Master, h.Salt)
	}
	return d, nil
}

// forget drops cached keys of a retired master version (0: none) or of one tenant's retired
// salt version, and every cached current key.
func (k *Keystore) forget(master uint32, tenant string, salt uint32) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.forgets.Add(1)
	k.tenants.each(func(name string, tc *tenantCache) {
		if old := tc.keys.Load(); old != nil {
			l := slices.DeleteFunc(slices.Clone(*old), func(d *derived) bool {
				return master != 0 && d.master == master || tenant != "" && name == tenant && d.salt == salt
			})
			tc.keys.Store(&l)
		}
		tc.sealers.Store(nil)
	})
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
	info := append(make([]byte, 0, 32+len(tenant)+len(purpose)), "moltgate/v2/tenant-key"...)
	return appendLP(appendLP(info, tenant), purpose)
}

// appendLP appends s with its length, 4 bytes big-endian, before it: fields so framed can
// be concatenated without two choices of names ever giving the same bytes.
func appendLP(b []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint32(b, uint32(len(s))), s...)
}

// appendAD appends the format-1 binding of a ciphertext to its tenant, record, purpose and
// key version, so one copied into another tenant's or record's place does not open (a swap
// attack).
func appendAD(ad []byte, tenant, record, purpose string, version uint32) []byte {
	ad = appendLP(appendLP(appendLP(append(ad, "moltgate/v1/ad\x00"...), tenant), record), purpose)
	return binary.BigEndian.AppendUint32(ad, version)
}

// appendAD2 appends the format-2 binding: as format 1, plus the tenant salt version, under
// a different label so a format-1 binding can never equal a format-2 one.
func appendAD2(ad []byte, tenant, record, purpose string, version, salt uint32) []byte {
	ad = appendLP(appendLP(appendLP(append(ad, "moltgate/v2/ad"...), tenant), record), purpose)
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(ad, version), salt)
}

// adContext is format 3's binding of tenant, purpose and key versions: the first 16 bytes of
// SHA-256 over a label and those fields, length-prefixed. It is computed once per derived
// key, so a seal or open authenticates 16 bytes and the record id, not the whole context:
// additional data longer than 48 bytes costs AES-GCM a third more on a 64-byte secret.
func adContext(tenant, purpose string, master, salt uint32) [contextSize]byte {
	b := append(make([]byte, 0, 32+len(tenant)+len(purpose)), "moltgate/v3/ad"...)
	b = appendLP(appendLP(b, tenant), purpose)
	sum := sha256.Sum256(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(b, master), salt))
	return [contextSize]byte(sum[:contextSize])
}
