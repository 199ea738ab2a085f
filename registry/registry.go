// Package registry keeps the gateways, their tenants, owners, members with roles, IP
// allowlists, skill rules and tokens. The store is the source of truth; the registry holds a
// copy in memory for the request path and keeps the policy engine's data in step with it.
//
// Invariants: every change is validated before anything is written; a gateway token is stored
// only as a SHA-256 hash (for comparison) and sealed by the keystore (for upstream use).
package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/store"
)

// Errors of registry operations, for errors.Is.
var (
	ErrNotFound = errors.New("registry: gateway not found")
	ErrExists   = errors.New("registry: gateway already exists")
	ErrInvalid  = errors.New("registry: invalid")
	// ErrUnknownAPIToken: the gateway has no API token of that id.
	ErrUnknownAPIToken = errors.New("registry: no such API token")
)

const (
	bucket       = "gateways"
	tokenPurpose = "gateway-token"
)

// Bucket is the store bucket of the gateway records, keyed by gateway id.
const Bucket = bucket

// KV is the storage the registry needs; store.Bolt implements it.
type KV interface {
	Get(bucket, key string) ([]byte, error)
	Put(bucket, key string, value []byte) error
	Delete(bucket, key string) error
	ForEach(bucket string, fn func(key string, value []byte) error) error
}

// Syncer receives every change, synchronously, before the change is visible to readers: the
// policy engine implements it so that data.gateways never lags the registry.
type Syncer interface {
	PutGateway(ctx context.Context, g Gateway) error
	DeleteGateway(ctx context.Context, id string) error
}

// Entry is what the request path needs of one gateway: the record and its opened upstream
// token. Entries are immutable; a change replaces the entry.
type Entry struct {
	Gateway
	// UpstreamURL is Upstream parsed.
	UpstreamURL *url.URL
	// Token is the gateway token, for upstream use in token mode.
	Token keystore.Secret

	stored []byte // the record as stored: a change that stores the same bytes changes nothing
}

// Registry is safe for concurrent use.
type Registry struct {
	kv   KV
	keys *keystore.Keystore
	sync Syncer
	now  func() time.Time

	writeMu    sync.Mutex // serialises changes so store, engine and memory agree
	mu         sync.RWMutex
	byID       map[string]*Entry
	byToken    map[[32]byte]string
	byAPIToken map[[32]byte]apiTokenRef

	subsMu sync.Mutex
	subs   []func(id string)
}

// New loads every gateway from kv, opens their tokens and hands them to sync.
func New(ctx context.Context, kv KV, keys *keystore.Keystore, syncer Syncer, now func() time.Time) (*Registry, error) {
	if now == nil {
		now = time.Now
	}
	r := &Registry{kv: kv, keys: keys, sync: syncer, now: now,
		byID: map[string]*Entry{}, byToken: map[[32]byte]string{}, byAPIToken: map[[32]byte]apiTokenRef{}}
	err := kv.ForEach(bucket, func(id string, v []byte) error {
		e, err := r.decode(id, v)
		if err != nil {
			return err
		}
		r.put(nil, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, e := range r.byID {
		if err := syncer.PutGateway(ctx, e.Gateway); err != nil {
			return nil, fmt.Errorf("registry: sync %q: %w", e.ID, err)
		}
	}
	return r, nil
}

// decode is the entry of stored record v of gateway id.
func (r *Registry) decode(id string, v []byte) (*Entry, error) {
	var g Gateway
	if err := json.Unmarshal(v, &g); err != nil {
		return nil, fmt.Errorf("registry: load %q: %w", id, err)
	}
	e, err := r.entry(g)
	if err != nil {
		return nil, fmt.Errorf("registry: load %q: %w", id, err)
	}
	e.stored = v
	return e, nil
}

// Changed brings the registry up to date with a change of the store that may have been
// made elsewhere (another replica sharing it): gateway key of bucket is read again, and
// the policy data, the memory and the subscribers follow as for a change made here. A
// change of another bucket is none of the registry's and is ignored.
func (r *Registry) Changed(ctx context.Context, bucket, key string) error {
	if bucket != Bucket {
		return nil
	}
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	v, err := r.kv.Get(bucket, key)
	if errors.Is(err, store.ErrNotFound) {
		v, err = nil, nil
	}
	if err != nil {
		return fmt.Errorf("registry: read %q: %w", key, err)
	}
	return r.follow(ctx, key, v)
}

// Reload reads every gateway from the store again, as Changed does one.
func (r *Registry) Reload(ctx context.Context) error {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	all := map[string][]byte{}
	if err := r.kv.ForEach(bucket, func(id string, v []byte) error { all[id] = v; return nil }); err != nil {
		return fmt.Errorf("registry: reload: %w", err)
	}
	r.mu.RLock()
	for id := range r.byID {
		if _, ok := all[id]; !ok {
			all[id] = nil
		}
	}
	r.mu.RUnlock()
	var errs []error
	for _, id := range slices.Sorted(maps.Keys(all)) {
		errs = append(errs, r.follow(ctx, id, all[id]))
	}
	return errors.Join(errs...)
}

// follow makes gateway id what the store holds, v (nil: no such gateway). The caller holds
// writeMu.
func (r *Registry) follow(ctx context.Context, id string, v []byte) error {
	old, ok := r.Lookup(id)
	switch {
	case v == nil && !ok:
		return nil
	case v == nil:
		return r.remove(ctx, old)
	case ok && bytes.Equal(old.stored, v):
		return nil // this replica's own change, or one it has seen
	}
	e, err := r.decode(id, v)
	if err != nil {
		return err
	}
	if err := r.sync.PutGateway(ctx, e.Gateway); err != nil {
		return fmt.Errorf("registry: sync %q: %w", id, err)
	}
	if !ok {
		old = nil
	}
	r.mu.Lock()
	r.put(old, e)
	r.mu.Unlock()
	r.notify(id)
	return nil
}

// put makes e the entry of its gateway in memory, in place of old (nil: none), with the
// token indexes. The caller holds mu, or is New.
func (r *Registry) put(old, e *Entry) {
	if old != nil {
		delete(r.byToken, [32]byte(old.TokenHash))
		for _, t := range old.APITokens {
			delete(r.byAPIToken, [32]byte(t.Hash))
		}
	}
	r.byID[e.ID] = e
	r.byToken[[32]byte(e.TokenHash)] = e.ID
	for id, t := range e.APITokens {
		r.byAPIToken[[32]byte(t.Hash)] = apiTokenRef{gateway: e.ID, id: id}
	}
}

// Subscribe registers fn to be called, after each change, with the id of the changed or
// removed gateway (WebSocket relays re-decide their connections).
func (r *Registry) Subscribe(fn func(id string)) {
	r.subsMu.Lock()
	r.subs = append(r.subs, fn)
	r.subsMu.Unlock()
}

// Lookup returns the entry of gateway id. The entry must not be modified.
func (r *Registry) Lookup(id string) (*Entry, bool) {
	r.mu.RLock()
	e, ok := r.byID[id]
	r.mu.RUnlock()
	return e, ok
}

// ByToken returns the gateway whose token is tok. The lookup is by SHA-256 and the final
// comparison constant-time, so response timing reveals nothing about stored tokens.
func (r *Registry) ByToken(tok string) (*Entry, bool) {
	h := HashToken(tok)
	r.mu.RLock()
	id, ok := r.byToken[h]
	e := r.byID[id]
	r.mu.RUnlock()
	if !ok || e == nil || subtle.ConstantTimeCompare(e.TokenHash, h[:]) != 1 {
		return nil, false
	}
	return e, true
}

// List returns copies of all gateways, sorted by id.
func (r *Registry) List() []Gateway {
	r.mu.RLock()
	out := make([]Gateway, 0, len(r.byID))
	for _, e := range r.byID {
		out = append(out, e.Gateway.clone())
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Get returns a copy of gateway id.
func (r *Registry) Get(id string) (Gateway, error) {
	e, ok := r.Lookup(id)
	if !ok {
		return Gateway{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return e.Gateway.clone(), nil
}

// Len is the number of gateways.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.byID)
}

// Create adds a gateway with the given token (64 hex digits). Members, allowlist and skills
// in g are validated like any change; Created, Revision and the token fields are set here.
func (r *Registry) Create(ctx context.Context, g Gateway, token string) (Gateway, error) {
	if !ValidToken(token) {
		return Gateway{}, fmt.Errorf("%w: token: want 64 lowercase hex digits", ErrInvalid)
	}
	g = g.clone()
	if g.AuthMode == "" {
		g.AuthMode = AuthToken
	}
	if err := g.Validate(); err != nil {
		return Gateway{}, err
	}
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	if _, ok := r.Lookup(g.ID); ok {
		return Gateway{}, fmt.Errorf("%w: %q", ErrExists, g.ID)
	}
	h := HashToken(token)
	r.mu.RLock()
	_, dup := r.byToken[h]
	r.mu.RUnlock()
	if dup {
		return Gateway{}, fmt.Errorf("%w: token: already used by another gateway", ErrInvalid)
	}
	sealed, err := r.keys.Seal(g.Tenant, tokenRecord(g.ID), tokenPurpose, []byte(token))
	if err != nil {
		return Gateway{}, fmt.Errorf("registry: seal token: %w", err)
	}
	g.TokenHash, g.TokenSealed = h[:], sealed
	g.Created, g.Revision = r.now().UTC(), 1
	if err := r.commit(ctx, g); err != nil {
		return Gateway{}, err
	}
	return g.clone(), nil
}

// Update applies change to a copy of gateway id, validates it and commits it. change may
// return an error to abort without writing.
func (r *Registry) Update(ctx context.Context, id string, change func(*Gateway) error) (Gateway, error) {
	return r.update(ctx, id, change, false)
}

// update is Update; with tokens, change may also make and revoke API tokens (apitoken.go),
// which Update keeps as they are, as it keeps the gateway token.
func (r *Registry) update(ctx context.Context, id string, change func(*Gateway) error, tokens bool) (Gateway, error) {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	e, ok := r.Lookup(id)
	if !ok {
		return Gateway{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	g := e.Gateway.clone()
	if err := change(&g); err != nil {
		return Gateway{}, err
	}
	// Identity and secrets are not changeable through Update.
	g.ID, g.Tenant, g.TokenHash, g.TokenSealed, g.Created = e.ID, e.Tenant, e.TokenHash, e.TokenSealed, e.Created
	if !tokens {
		g.APITokens = e.APITokens
	}
	g.Revision = e.Revision + 1
	if err := g.Validate(); err != nil {
		return Gateway{}, err
	}
	if err := r.commit(ctx, g); err != nil {
		return Gateway{}, err
	}
	return g.clone(), nil
}

// SetToken replaces gateway id's token (64 hex digits) in one change: from its commit on,
// the request path sends the new token upstream and accepts only the new one from callers,
// and sockets opened with the old one are closed. Setting the token it holds changes nothing.
// The provisioner calls it once the gateway itself holds the new token (token rotation).
func (r *Registry) SetToken(ctx context.Context, id, token string) (Gateway, error) {
	if !ValidToken(token) {
		return Gateway{}, fmt.Errorf("%w: token: want 64 lowercase hex digits", ErrInvalid)
	}
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	e, ok := r.Lookup(id)
	if !ok {
		return Gateway{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	h := HashToken(token)
	if subtle.ConstantTimeCompare(e.TokenHash, h[:]) == 1 {
		return e.Gateway.clone(), nil
	}
	r.mu.RLock()
	_, dup := r.byToken[h]
	r.mu.RUnlock()
	if dup {
		return Gateway{}, fmt.Errorf("%w: token: already used by another gateway", ErrInvalid)
	}
	sealed, err := r.keys.Seal(e.Tenant, tokenRecord(id), tokenPurpose, []byte(token))
	if err != nil {
		return Gateway{}, fmt.Errorf("registry: seal token: %w", err)
	}
	g := e.Gateway.clone()
	g.TokenHash, g.TokenSealed = h[:], sealed
	g.Revision = e.Revision + 1
	if err := r.commit(ctx, g); err != nil {
		return Gateway{}, err
	}
	r.mu.Lock()
	delete(r.byToken, [32]byte(e.TokenHash))
	r.mu.Unlock()
	return g.clone(), nil
}

// Delete removes gateway id.
func (r *Registry) Delete(ctx context.Context, id string) error {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	e, ok := r.Lookup(id)
	if !ok {
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if err := r.kv.Delete(bucket, id); err != nil {
		return fmt.Errorf("registry: delete %q: %w", id, err)
	}
	return r.remove(ctx, e)
}

// remove drops gateway e from memory and policy data, and tells the subscribers.
func (r *Registry) remove(ctx context.Context, e *Entry) error {
	r.mu.Lock()
	delete(r.byID, e.ID)
	delete(r.byToken, [32]byte(e.TokenHash))
	for _, t := range e.APITokens {
		delete(r.byAPIToken, [32]byte(t.Hash))
	}
	r.mu.Unlock()
	if err := r.sync.DeleteGateway(ctx, e.ID); err != nil {
		return fmt.Errorf("registry: sync delete %q: %w", e.ID, err)
	}
	r.notify(e.ID)
	return nil
}

// commit writes g to the policy data, the store and memory. If the store refuses, the policy
// data is put back, so a failed change leaves every copy as it was.
func (r *Registry) commit(ctx context.Context, g Gateway) error {
	e, err := r.entry(g)
	if err != nil {
		return err
	}
	v, err := json.Marshal(g)
	if err != nil {
		return fmt.Errorf("registry: encode %q: %w", g.ID, err)
	}
	if err := r.sync.PutGateway(ctx, g); err != nil {
		return fmt.Errorf("registry: sync %q: %w", g.ID, err)
	}
	if err := r.kv.Put(bucket, g.ID, v); err != nil {
		undo := func() error { return r.sync.DeleteGateway(ctx, g.ID) }
		if old, ok := r.Lookup(g.ID); ok {
			undo = func() error { return r.sync.PutGateway(ctx, old.Gateway) }
		}
		return errors.Join(fmt.Errorf("registry: write %q: %w", g.ID, err), undo())
	}
	e.stored = v
	old, _ := r.Lookup(g.ID)
	r.mu.Lock()
	r.put(old, e)
	r.mu.Unlock()
	r.notify(g.ID)
	return nil
}

func (r *Registry) notify(id string) {
	r.subsMu.Lock()
	subs := slices.Clone(r.subs)
	r.subsMu.Unlock()
	for _, fn := range subs {
		fn(id)
	}
}

func (r *Registry) entry(g Gateway) (*Entry, error) {
	u, err := parseUpstream(g.Upstream)
	if err != nil {
		return nil, err
	}
	if len(g.TokenHash) != sha256.Size {
		return nil, fmt.Errorf("%w: token hash missing", ErrInvalid)
	}
	for id, t := range g.APITokens {
		if len(t.Hash) != sha256.Size { // the index takes it as a [32]byte
			return nil, fmt.Errorf("%w: api_tokens[%s]: token hash missing", ErrInvalid, id)
		}
	}
	tok, err := r.keys.Open(g.Tenant, tokenRecord(g.ID), tokenPurpose, g.TokenSealed)
	if err != nil {
		return nil, fmt.Errorf("registry: open token of %q: %w", g.ID, err)
	}
	return &Entry{Gateway: g, UpstreamURL: u, Token: tok}, nil
}

func tokenRecord(id string) string { return "gateways/" + id + "/token" }

// HashToken is the stored form of a gateway token.
func HashToken(tok string) [32]byte { return sha256.Sum256([]byte(tok)) }

// ValidToken reports whether s has the shape of a gateway token: 64 lowercase hex digits.
func ValidToken(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

var (
	idPattern   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$`)
)

// Validate reports every problem with g at once, each naming its field.
func (g *Gateway) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...))
	}
	// The id is a DNS label: it becomes <id>.<gateway_domain>, so nothing else may route.
	if !idPattern.MatchString(g.ID) {
		bad("id %q: want a DNS label (a-z, 0-9, '-', at most 63)", g.ID)
	}
	if !namePattern.MatchString(g.Tenant) {
		bad("tenant %q: want 1-128 of A-Z a-z 0-9 _ . : @ -", g.Tenant)
	}
	if !namePattern.MatchString(g.Owner) {
		bad("owner %q: want a user id", g.Owner)
	}
	if _, err := parseUpstream(g.Upstream); err != nil {
		errs = append(errs, err)
	}
	if g.AuthMode != AuthToken && g.AuthMode != AuthTrustedProxy {
		bad("auth_mode %q: want token or trusted-proxy", g.AuthMode)
	}
	for _, user := range slices.Sorted(maps.Keys(g.Members)) {
		if !namePattern.MatchString(user) {
			bad("members: user %q: want a user id", user)
		}
		if !ValidRole(g.Members[user]) {
			bad("members[%s]: role %q: want viewer, operator or admin", user, g.Members[user])
		}
	}
	if len(g.APITokens) > MaxAPITokens {
		bad("api_tokens: %d: want at most %d", len(g.APITokens), MaxAPITokens)
	}
	for _, id := range slices.Sorted(maps.Keys(g.APITokens)) {
		for _, problem := range g.APITokens[id].validate(id) {
			bad("%s", problem)
		}
	}
	for i, c := range g.Allowlist {
		if _, err := ParseCIDR(c); err != nil {
			bad("allowlist[%d]: %q: not an IP address or CIDR", i, c)
		}
	}
	for field, names := range map[string][]string{"skills.allow": g.Skills.Allow, "skills.deny": g.Skills.Deny} {
		for i, n := range names {
			if !namePattern.MatchString(n) {
				bad("%s[%d]: %q: want a tool or skill name", field, i, n)
			}
		}
	}
	return errors.Join(errs...)
}

// ValidRole reports whether role is one of the member roles.
func ValidRole(role string) bool {
	return role == RoleViewer || role == RoleOperator || role == RoleAdmin
}

// ParseCIDR accepts a CIDR or a single address (as a /32 or /128) and returns it masked.
func ParseCIDR(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return p.Masked(), nil
}

// CheckCIDR refuses what ParseCIDR would take with a meaning the writer may not have meant:
// a CIDR with bits set past its prefix length ("10.0.0.5/24" admits 10.0.0.0/24, not one
// host). The error gives both normal forms. Values already stored are not checked again.
func CheckCIDR(s string) error {
	p, err := ParseCIDR(s)
	if err != nil {
		return fmt.Errorf("%q: not an IP address or CIDR", s)
	}
	if given, err := netip.ParsePrefix(s); err == nil && given.Addr() != p.Addr() {
		return fmt.Errorf("%q has host bits set: write %s for the network, or %s/%d for the one address",
			s, p, given.Addr(), given.Addr().BitLen())
	}
	return nil
}

func parseUpstream(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%w: upstream %s: want http(s)://host[:port][/path] without user info, query or fragment",
			ErrInvalid, shownUpstream(s, u, err))
	}
	return u, nil
}

// shownUpstream quotes an upstream value for an error message without the user info it may
// hold: a URL's user info can be a password.
func shownUpstream(s string, u *url.URL, err error) string {
	switch {
	case err == nil && u.User != nil:
		c := *u
		c.User = url.User("redacted")
		return strconv.Quote(c.String())
	case err != nil && strings.Contains(s, "@"):
		return "(not shown: it may hold a credential)"
	case len(s) > 200:
		return strconv.Quote(s[:200]) + "…"
	}
	return strconv.Quote(s)
}

func (g Gateway) clone() Gateway {
	g.Members = maps.Clone(g.Members)
	g.APITokens = maps.Clone(g.APITokens) // the records are never changed in place
	g.Allowlist = slices.Clone(g.Allowlist)
	g.Skills.Allow = slices.Clone(g.Skills.Allow)
	g.Skills.Deny = slices.Clone(g.Skills.Deny)
	g.TokenHash = slices.Clone(g.TokenHash)
	g.TokenSealed = slices.Clone(g.TokenSealed)
	return g
}
