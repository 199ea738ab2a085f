package keystore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/store"
)

// Errors of API-key operations, for errors.Is.
var (
	ErrKeyNotFound = errors.New("keystore: key not found")
	ErrKeyInvalid  = errors.New("keystore: invalid key request")
	// ErrKeyState means the key is not in a state that allows the operation (activate before
	// verify, anything after revoke, revoke of the active key without force).
	ErrKeyState = errors.New("keystore: key state forbids this")
	// ErrKeyRejected means the provider refused the key when verified.
	ErrKeyRejected = errors.New("keystore: provider rejected the key")
)

// Kind is what a key record holds.
type Kind string

// Kinds of key records.
const (
	KindProviderKey       Kind = "provider_key"       // an LLM provider API key (Anthropic, OpenAI, …)
	KindChannelCredential Kind = "channel_credential" // a channel credential (Telegram, Discord bot token, WhatsApp session)
)

// State is where a key is in its lifecycle: added → verified → active → (verified when another
// key is activated) → revoked.
type State string

// States of a key.
const (
	StateAdded    State = "added"
	StateVerified State = "verified"
	StateActive   State = "active"
	StateRevoked  State = "revoked"
)

// APIKey is a key record's metadata: everything but the secret, safe to show, log and hand
// to policy. The sealed secret is kept beside it in the store and never leaves this package
// except through an Opener.
type APIKey struct {
	ID       string `json:"id"`
	Tenant   string `json:"tenant"`
	Provider string `json:"provider"`
	Kind     Kind   `json:"kind"`
	Label    string `json:"label,omitempty"`
	// Last4 is the last four characters of the secret; empty for secrets shorter than 16
	// characters, where four would reveal too much.
	Last4 string `json:"last4,omitempty"`
	// Fingerprint is the first 8 bytes of HMAC-SHA256 of the secret under the tenant's
	// fingerprint key, in hex: it tells keys apart without enabling an offline guess, and the
	// same secret has the same fingerprint whenever it is added.
	Fingerprint          string    `json:"fingerprint"`
	Scope                []string  `json:"scope,omitempty"`
	MonthlySpendCapCents int64     `json:"monthly_spend_cap_cents,omitempty"`
	State                State     `json:"state"`
	Created              time.Time `json:"created"`
	Verified             time.Time `json:"verified,omitzero"`
	Activated            time.Time `json:"activated,omitzero"`
	Revoked              time.Time `json:"revoked,omitzero"`
}

// keyRecord is what is stored: the metadata and the sealed secret (empty once revoked).
type keyRecord struct {
	APIKey
	Sealed []byte `json:"sealed,omitempty"`
}

// Buckets of key records: keys by "<tenant>/<id>", and the active key id of each tenant and
// provider by "<tenant>/<provider>" (one record, so switching the active key is one atomic write).
const (
	keysBucket   = "keystore.keys"
	activeBucket = "keystore.active"
)

var (
	tenantPattern   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$`)
	providerPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)
	scopePattern    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:*/-]{0,63}$`)
	idPattern       = regexp.MustCompile(`^k_[0-9a-f]{16}$`)
)

// Auditor receives audit events; audit.FileLog implements it.
type Auditor interface {
	Emit(ctx context.Context, e audit.Event) error
}

// EventSecretOpen is the audit event type of every open of a tenant secret.
const EventSecretOpen = "secret.open"

// KeysConfig configures Keys.
type KeysConfig struct {
	// Keystore seals and opens the secrets. Required.
	Keystore *Keystore
	// KV stores the records. Required.
	KV KV
	// Audit receives an event for every open of a secret (verify opens it too). Required.
	Audit Auditor
	// Verifier checks a key with its provider. Nil: Verify fails with ErrKeyRejected's
	// sibling "no verifier", so keys cannot be activated unverified.
	Verifier Verifier
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Keys manages tenants' provider API keys and channel credentials: add (sealed), verify,
// activate (one active key per tenant and provider), revoke. It is safe for concurrent use,
// also across processes sharing the store: every record change is a compare-and-swap.
type Keys struct {
	cfg KeysConfig
	// sealing is held (read) from sealing a new secret until its record is stored, so Quiesce
	// can wait out seals made under a key version rotation is about to retire.
	sealing sync.RWMutex

	subsMu sync.Mutex
	subs   []func(ctx context.Context, tenant string)
}

// Subscribe registers fn to be called after every change this Keys makes to a tenant's keys
// (add, verify, activate, revoke), once the change is stored and before the call that made it
// returns. The policy engine subscribes to keep data.tenant_keys in step. fn gets a context
// that is not cancelled with the caller's, so a client going away does not skip it.
func (m *Keys) Subscribe(fn func(ctx context.Context, tenant string)) {
	m.subsMu.Lock()
	m.subs = append(m.subs, fn)
	m.subsMu.Unlock()
}

// Changed tells the subscribers of a change of the store that may have been made elsewhere
// (another replica sharing it), as if this Keys had made it: a change of a key record or an
// active-key record names its tenant. Changes of other buckets are ignored.
func (m *Keys) Changed(ctx context.Context, bucket, key string) {
	if bucket != keysBucket && bucket != activeBucket {
		return
	}
	if tenant, _, ok := strings.Cut(key, "/"); ok {
		m.notify(ctx, tenant)
	}
}

func (m *Keys) notify(ctx context.Context, tenant string) {
	m.subsMu.Lock()
	subs := slices.Clone(m.subs)
	m.subsMu.Unlock()
	ctx = context.WithoutCancel(ctx)
	for _, fn := range subs {
		fn(ctx, tenant)
	}
}

// ActiveTenants returns, sorted, the tenants that have an active key of some provider: with
// Active, what a full load of policy data reads.
func (m *Keys) ActiveTenants() ([]string, error) {
	var out []string
	err := m.cfg.KV.ForEach(activeBucket, func(key string, _ []byte) error {
		if tenant, _, ok := strings.Cut(key, "/"); ok && (len(out) == 0 || out[len(out)-1] != tenant) {
			out = append(out, tenant)
		}
		return nil
	})
	slices.Sort(out)
	return slices.Compact(out), err
}

// Quiesce implements Quiescer: it returns once every Add that sealed its secret before the
// call has stored its record, so a usage scan after it sees every ciphertext in flight.
func (m *Keys) Quiesce() {
	m.sealing.Lock()
	defer m.sealing.Unlock() //nolint:staticcheck // an empty critical section is the barrier
}

// NewKeys returns a key manager.
func NewKeys(cfg KeysConfig) (*Keys, error) {
	if cfg.Keystore == nil || cfg.KV == nil || cfg.Audit == nil {
		return nil, errors.New("keystore: Keystore, KV and Audit are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Keys{cfg: cfg}, nil
}

// AddRequest is a new key.
type AddRequest struct {
	Tenant   string
	Provider string // e.g. anthropic, openai, telegram, discord, whatsapp
	Kind     Kind
	Label    string
	// Secret is the key itself; Add seals it and clears this buffer.
	Secret               Secret
	Scope                []string
	MonthlySpendCapCents int64
}

func keyRecordName(id string) string { return "keys/" + id }

// Add seals and stores a new key in state added, and clears req.Secret.
func (m *Keys) Add(ctx context.Context, req AddRequest) (APIKey, error) {
	k, err := m.add(req)
	if err == nil {
		m.notify(ctx, k.Tenant)
	}
	return k, err
}

func (m *Keys) add(req AddRequest) (APIKey, error) {
	defer clear(req.Secret)
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrKeyInvalid}, args...)...))
	}
	if !tenantPattern.MatchString(req.Tenant) {
		bad("tenant %q: want 1-128 of A-Z a-z 0-9 _ . : @ -", req.Tenant)
	}
	if !providerPattern.MatchString(req.Provider) {
		bad("provider %q: want 1-32 of a-z 0-9 _ -", req.Provider)
	}
	if req.Kind == "" {
		req.Kind = KindProviderKey
	}
	if req.Kind != KindProviderKey && req.Kind != KindChannelCredential {
		bad("kind %q: want provider_key or channel_credential", req.Kind)
	}
	if n := len(req.Secret); n < 8 || n > 8192 {
		// The value is never quoted: it is the secret.
		bad("key: want 8 to 8192 bytes, got %d", n)
	}
	if len(req.Label) > 128 {
		bad("label: at most 128 characters")
	}
	for i, s := range req.Scope {
		if !scopePattern.MatchString(s) {
			bad("scope[%d] %q: want 1-64 of A-Z a-z 0-9 _ . : * / -", i, s)
		}
	}
	if req.MonthlySpendCapCents < 0 {
		bad("monthly_spend_cap_cents: negative")
	}
	if err := errors.Join(errs...); err != nil {
		return APIKey{}, err
	}
	var idb [8]byte
	rand.Read(idb[:])
	k := APIKey{ID: "k_" + hex.EncodeToString(idb[:]), Tenant: req.Tenant, Provider: req.Provider, Kind: req.Kind,
		Label: req.Label, Scope: slices.Clone(req.Scope), MonthlySpendCapCents: req.MonthlySpendCapCents,
		State: StateAdded, Created: m.cfg.Now().UTC()}
	if len(req.Secret) >= 16 {
		k.Last4 = string(req.Secret[len(req.Secret)-4:])
	}
	fp, err := m.fingerprint(req.Tenant, req.Secret)
	if err != nil {
		return APIKey{}, err
	}
	k.Fingerprint = fp
	m.sealing.RLock()
	defer m.sealing.RUnlock()
	sealed, err := m.cfg.Keystore.Seal(req.Tenant, keyRecordName(k.ID), string(k.Kind), req.Secret)
	if err != nil {
		return APIKey{}, err
	}
	v, err := json.Marshal(keyRecord{APIKey: k, Sealed: sealed})
	if err != nil {
		return APIKey{}, fmt.Errorf("keystore: encode key: %w", err)
	}
	if err := m.cfg.KV.Swap(keysBucket, req.Tenant+"/"+k.ID, nil, v); err != nil {
		return APIKey{}, fmt.Errorf("keystore: store key: %w", err)
	}
	return k, nil
}

// Get returns one key's metadata.
func (m *Keys) Get(tenant, id string) (APIKey, error) {
	rec, _, err := m.load(tenant, id)
	if err != nil {
		return APIKey{}, err
	}
	return m.withState(rec.APIKey)
}

// List returns a tenant's keys' metadata, sorted by id, never the secret.
func (m *Keys) List(tenant string) ([]APIKey, error) {
	out := []APIKey{}
	err := m.cfg.KV.ForEachPrefix(keysBucket, tenant+"/", func(key string, v []byte) error {
		var rec keyRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("keystore: key record %q: corrupt", key)
		}
		k, err := m.withState(rec.APIKey)
		if err != nil {
			return err
		}
		out = append(out, k)
		return nil
	})
	return out, err
}

// Active returns the active key of each provider of tenant: the metadata the proxy and
// policy use to pick a credential and check its scope and spend cap (policy gets id,
// provider, kind, scope and spend cap as data.tenant_keys, see policies.Engine.SyncTenantKeys).
func (m *Keys) Active(tenant string) (map[string]APIKey, error) {
	all, err := m.List(tenant)
	if err != nil {
		return nil, err
	}
	out := map[string]APIKey{}
	for _, k := range all {
		if k.State == StateActive {
			out[k.Provider] = k
		}
	}
	return out, nil
}

// Verify checks the key with its provider through the Verifier (opening the secret, an
// audited open with reason "verify") and marks it verified. A rejected key stays as it was.
func (m *Keys) Verify(ctx context.Context, actor audit.Actor, tenant, id string) (APIKey, error) {
	k, err := m.verify(ctx, actor, tenant, id)
	if err == nil {
		m.notify(ctx, tenant)
	}
	return k, err
}

func (m *Keys) verify(ctx context.Context, actor audit.Actor, tenant, id string) (APIKey, error) {
	rec, _, err := m.load(tenant, id)
	if err != nil {
		return APIKey{}, err
	}
	if rec.State == StateRevoked {
		return APIKey{}, fmt.Errorf("%w: key is revoked", ErrKeyState)
	}
	if m.cfg.Verifier == nil {
		return APIKey{}, fmt.Errorf("%w: no verifier configured", ErrKeyRejected)
	}
	o := &Opener{keys: m, actor: actor, reason: "verify", sink: m.cfg.Audit}
	secret, err := o.Open(ctx, tenant, id)
	if err != nil {
		return APIKey{}, err
	}
	verr := m.cfg.Verifier.Verify(ctx, rec.Provider, rec.Kind, secret)
	clear(secret)
	if verr != nil {
		return APIKey{}, verr
	}
	return m.update(tenant, id, func(r *keyRecord) error {
		if r.State == StateRevoked {
			return fmt.Errorf("%w: key is revoked", ErrKeyState)
		}
		r.State, r.Verified = StateVerified, m.cfg.Now().UTC()
		return nil
	})
}

// Activate makes a verified key the active one of its tenant and provider. The switch is one
// atomic write of the active pointer: requests see either the old key or the new one, never
// none. The previous active key becomes verified (still usable until revoked).
func (m *Keys) Activate(ctx context.Context, tenant, id string) (APIKey, error) {
	k, err := m.activate(tenant, id)
	m.notifyAfter(ctx, tenant)
	return k, err
}

// notifyAfter notifies after an activate or revoke, failed or not: one that failed part way
// may have moved the active pointer.
func (m *Keys) notifyAfter(ctx context.Context, tenant string) {
	if tenantPattern.MatchString(tenant) {
		m.notify(ctx, tenant)
	}
}

func (m *Keys) activate(tenant, id string) (APIKey, error) {
	for range 16 {
		rec, _, err := m.load(tenant, id)
		if err != nil {
			return APIKey{}, err
		}
		if rec.State != StateVerified {
			return APIKey{}, fmt.Errorf("%w: only a verified key can be activated (key is %s)", ErrKeyState, rec.State)
		}
		slot := tenant + "/" + rec.Provider
		cur, err := m.cfg.KV.Get(activeBucket, slot)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return APIKey{}, err
		}
		if string(cur) == id {
			return m.withState(rec.APIKey)
		}
		err = m.cfg.KV.Swap(activeBucket, slot, cur, []byte(id))
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return APIKey{}, fmt.Errorf("keystore: activate: %w", err)
		}
		return m.update(tenant, id, func(r *keyRecord) error { r.Activated = m.cfg.Now().UTC(); return nil })
	}
	return APIKey{}, fmt.Errorf("keystore: activate: %w", store.ErrConflict)
}

// Revoke ends a key: its sealed secret is deleted (nothing can open it again) and it can never
// be activated. The active key is refused unless force, which leaves the provider without an
// active key.
func (m *Keys) Revoke(ctx context.Context, tenant, id string, force bool) (APIKey, error) {
	k, err := m.revoke(tenant, id, force)
	m.notifyAfter(ctx, tenant)
	return k, err
}

func (m *Keys) revoke(tenant, id string, force bool) (APIKey, error) {
	rec, _, err := m.load(tenant, id)
	if err != nil {
		return APIKey{}, err
	}
	slot := tenant + "/" + rec.Provider
	cur, err := m.cfg.KV.Get(activeBucket, slot)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		// Unknown whether the key is active: revoking it could leave the slot pointing at
		// a revoked key.
		return APIKey{}, fmt.Errorf("keystore: revoke: %w", err)
	}
	if err == nil && string(cur) == id {
		if !force {
			return APIKey{}, fmt.Errorf("%w: key is active; activate another first, or force", ErrKeyState)
		}
		if err := m.cfg.KV.Swap(activeBucket, slot, cur, nil); err != nil {
			return APIKey{}, fmt.Errorf("keystore: revoke: %w", err)
		}
	}
	return m.update(tenant, id, func(r *keyRecord) error {
		if r.State != StateRevoked {
			r.State, r.Revoked = StateRevoked, m.cfg.Now().UTC()
		}
		clear(r.Sealed)
		r.Sealed = nil
		return nil
	})
}

// load reads a record and its stored bytes (for Swap).
func (m *Keys) load(tenant, id string) (keyRecord, []byte, error) {
	if !tenantPattern.MatchString(tenant) || !idPattern.MatchString(id) {
		return keyRecord{}, nil, fmt.Errorf("%w: %q", ErrKeyNotFound, id)
	}
	v, err := m.cfg.KV.Get(keysBucket, tenant+"/"+id)
	if errors.Is(err, store.ErrNotFound) {
		return keyRecord{}, nil, fmt.Errorf("%w: %q", ErrKeyNotFound, id)
	}
	if err != nil {
		return keyRecord{}, nil, err
	}
	var rec keyRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return keyRecord{}, nil, fmt.Errorf("keystore: key record %q: corrupt", id)
	}
	return rec, v, nil
}

// update applies fn to a record with compare-and-swap, retrying when someone else (rotation,
// another replica) changed it in between.
func (m *Keys) update(tenant, id string, fn func(*keyRecord) error) (APIKey, error) {
	for range 16 {
		rec, raw, err := m.load(tenant, id)
		if err != nil {
			return APIKey{}, err
		}
		if err := fn(&rec); err != nil {
			return APIKey{}, err
		}
		v, err := json.Marshal(rec)
		if err != nil {
			return APIKey{}, fmt.Errorf("keystore: encode key: %w", err)
		}
		err = m.cfg.KV.Swap(keysBucket, tenant+"/"+id, raw, v)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return APIKey{}, fmt.Errorf("keystore: store key: %w", err)
		}
		return m.withState(rec.APIKey)
	}
	return APIKey{}, fmt.Errorf("keystore: store key: %w", store.ErrConflict)
}

// withState derives "active" from the active pointer.
func (m *Keys) withState(k APIKey) (APIKey, error) {
	if k.State != StateVerified {
		return k, nil
	}
	cur, err := m.cfg.KV.Get(activeBucket, k.Tenant+"/"+k.Provider)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return APIKey{}, err
	}
	if string(cur) == k.ID {
		k.State = StateActive
	}
	return k, nil
}

// Opener is the one way to get a tenant secret's plaintext out of the keystore. It is made
// for one actor and one reason (the provisioner installing credentials, the proxy attaching an
// upstream credential) and audits every open it does, successful or not, with who, which
// record and why, never the value. If the audit event cannot be written the secret is not
// returned: an unaudited open does not happen.
type Opener struct {
	keys   *Keys
	actor  audit.Actor
	reason string
	sink   Auditor
}

// OpenReason is why a tenant secret leaves the keystore. The set is closed: these are the only
// paths that may hold a tenant's plaintext key, and each open names its reason in the audit.
type OpenReason string

// Reasons an Opener can be made for.
const (
	// ReasonUpstreamCredential: the proxy attaching a tenant's provider key or channel
	// credential to a call it forwards.
	ReasonUpstreamCredential OpenReason = "upstream-credential"
	// ReasonProvision: the provisioner installing a tenant's credentials into its gateway.
	ReasonProvision OpenReason = "provision"
)

// NewOpener returns an Opener acting as actor for reason, auditing to sink. Any reason but
// the declared ones is refused.
func NewOpener(keys *Keys, actor audit.Actor, reason OpenReason, sink Auditor) (*Opener, error) {
	if keys == nil || sink == nil || actor.Kind == "" || actor.ID == "" {
		return nil, errors.New("keystore: an Opener needs keys, an actor (kind and id) and an audit sink")
	}
	if reason != ReasonUpstreamCredential && reason != ReasonProvision {
		return nil, fmt.Errorf("keystore: no Opener for reason %q: secrets open only for %q or %q",
			reason, ReasonUpstreamCredential, ReasonProvision)
	}
	return &Opener{keys: keys, actor: actor, reason: string(reason), sink: sink}, nil
}

// Open returns the secret of key id of tenant. The caller clears it after use.
//
// A record read just before rotation re-encrypted it may name a key version that rotation has
// retired since (it retires a version once no stored record uses it). The stored record is
// then under a current version: Open reads it again, as long as it keeps changing.
func (o *Opener) Open(ctx context.Context, tenant, id string) (Secret, error) {
	rec, raw, err := o.keys.load(tenant, id)
	if err != nil {
		o.audit(ctx, tenant, id, rec.APIKey, "error", "not_found")
		return nil, err
	}
	var plain []byte
	for range 8 {
		if rec.State == StateRevoked || len(rec.Sealed) == 0 {
			o.audit(ctx, tenant, id, rec.APIKey, "deny", "revoked")
			return nil, fmt.Errorf("%w: key is revoked", ErrKeyState)
		}
		plain, err = o.keys.cfg.Keystore.Open(tenant, keyRecordName(id), string(rec.Kind), rec.Sealed)
		if !errors.Is(err, ErrUnknownVersion) {
			break
		}
		again, raw2, lerr := o.keys.load(tenant, id)
		if lerr != nil || bytes.Equal(raw2, raw) {
			break // the stored record is what failed: report the first error
		}
		rec, raw = again, raw2
	}
	if err != nil {
		o.audit(ctx, tenant, id, rec.APIKey, "error", "does_not_open")
		return nil, err
	}
	if err := o.audit(ctx, tenant, id, rec.APIKey, "success", o.reason); err != nil {
		clear(plain)
		return nil, fmt.Errorf("keystore: open refused, audit failed: %w", err)
	}
	return plain, nil
}

// OpenActive returns the active key of tenant for provider, with its metadata.
func (o *Opener) OpenActive(ctx context.Context, tenant, provider string) (APIKey, Secret, error) {
	cur, err := o.keys.cfg.KV.Get(activeBucket, tenant+"/"+provider)
	if errors.Is(err, store.ErrNotFound) {
		return APIKey{}, nil, fmt.Errorf("%w: no active %s key", ErrKeyNotFound, provider)
	}
	if err != nil {
		return APIKey{}, nil, err
	}
	s, err := o.Open(ctx, tenant, string(cur))
	if err != nil {
		return APIKey{}, nil, err
	}
	k, err := o.keys.Get(tenant, string(cur))
	if err != nil {
		clear(s)
		return APIKey{}, nil, err
	}
	return k, s, nil
}

func (o *Opener) audit(ctx context.Context, tenant, id string, k APIKey, outcome, reason string) error {
	ev := audit.Event{Type: EventSecretOpen, Actor: o.actor, Tenant: tenant, Action: "keys.open",
		Outcome: outcome, Reason: reason,
		Details: map[string]string{"record": keyRecordName(id), "purpose": o.reason}}
	if k.Provider != "" {
		ev.Details["provider"], ev.Details["kind"] = k.Provider, string(k.Kind)
	}
	return o.sink.Emit(ctx, ev)
}
