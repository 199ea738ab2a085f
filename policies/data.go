package policies

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/registry"
)

// Top-level data documents the engine owns. Policy data files must not define them.
const (
	dataGateways       = "gateways"
	dataPlatformAdmins = "platform_admins"
	dataTenantKeys     = "tenant_keys"
)

// ErrInvalidGateway is returned for a gateway record the engine cannot store (empty id).
var ErrInvalidGateway = errors.New("invalid gateway")

// gatewayValue converts a registry record to the document policies read as
// data.gateways[id]. Token hash, sealed token, upstream address and timestamps are left
// out: policy data never holds secrets.
//
// Allowlist entries are canonicalised (a bare address becomes a /32 or /128 prefix); an
// entry that does not parse is kept as written, so it matches no address and the allowlist
// still binds: dropping it could turn a restricted gateway into an open one. Skill rule
// names are given as CanonicalName returns them, as the names in the input are.
func (e *Engine) gatewayValue(ctx context.Context, g *registry.Gateway) ast.Value {
	members := make([][2]*ast.Term, 0, len(g.Members))
	for _, user := range slices.Sorted(maps.Keys(g.Members)) {
		members = append(members, [2]*ast.Term{ast.StringTerm(user), str(g.Members[user])})
	}
	// An API token's role only: its hash, name and expiry are the proxy's (an expired token
	// is refused before any decision).
	tokens := make([][2]*ast.Term, 0, len(g.APITokens))
	for _, id := range slices.Sorted(maps.Keys(g.APITokens)) {
		tokens = append(tokens, [2]*ast.Term{ast.StringTerm(id), ast.ObjectTerm([2]*ast.Term{str("role"), str(g.APITokens[id].Role)})})
	}
	allow := make([]*ast.Term, 0, len(g.Allowlist))
	for _, entry := range g.Allowlist {
		allow = append(allow, ast.StringTerm(e.canonicalCIDR(ctx, g.ID, entry)))
	}
	return ast.NewObject(
		[2]*ast.Term{str("id"), ast.StringTerm(g.ID)},
		[2]*ast.Term{str("tenant"), ast.StringTerm(g.Tenant)},
		[2]*ast.Term{str("owner"), ast.StringTerm(g.Owner)},
		[2]*ast.Term{str("auth_mode"), str(string(g.AuthMode))},
		[2]*ast.Term{str("members"), ast.NewTerm(ast.NewObject(members...))},
		[2]*ast.Term{str("api_tokens"), ast.NewTerm(ast.NewObject(tokens...))},
		[2]*ast.Term{str("allowlist"), ast.ArrayTerm(allow...)},
		[2]*ast.Term{str("skills"), ast.ObjectTerm(
			[2]*ast.Term{str("allow"), namesTerm(g.Skills.Allow)},
			[2]*ast.Term{str("deny"), namesTerm(g.Skills.Deny)},
		)},
	)
}

func (e *Engine) canonicalCIDR(ctx context.Context, gateway, entry string) string {
	s := strings.TrimSpace(entry)
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked().String()
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return netip.PrefixFrom(a, a.BitLen()).String()
	}
	e.logger.LogAttrs(ctx, slog.LevelWarn, "policies: allowlist entry is not a CIDR; it matches no address",
		slog.String("gateway", gateway), slog.String("entry", entry))
	return entry
}

// namesTerm is an array of the canonical forms of tool or skill names.
func namesTerm(names []string) *ast.Term {
	ts := make([]*ast.Term, len(names))
	for i, n := range names {
		ts[i] = str(CanonicalName(n))
	}
	return ast.ArrayTerm(ts...)
}

func stringsTerm(ss []string) *ast.Term {
	ts := make([]*ast.Term, len(ss))
	for i, s := range ss {
		ts[i] = str(s)
	}
	return ast.ArrayTerm(ts...)
}

// SetGateways replaces data.gateways with gws, in one write: a decision sees either the old
// set or the new one. Use it at start-up and after losing track of changes; PutGateway and
// DeleteGateway apply single changes without rebuilding the set.
func (e *Engine) SetGateways(ctx context.Context, gws []registry.Gateway) error {
	items := make([][2]*ast.Term, 0, len(gws))
	seen := make(map[string]struct{}, len(gws))
	for i := range gws {
		g := &gws[i]
		if g.ID == "" {
			return fmt.Errorf("policies: set gateways: gateways[%d]: %w: empty id", i, ErrInvalidGateway)
		}
		if _, dup := seen[g.ID]; dup {
			return fmt.Errorf("policies: set gateways: gateways[%d]: %w: duplicate id %q", i, ErrInvalidGateway, g.ID)
		}
		seen[g.ID] = struct{}{}
		items = append(items, [2]*ast.Term{ast.StringTerm(g.ID), ast.NewTerm(e.gatewayValue(ctx, g))})
	}
	obj := ast.NewObject(items...)
	if err := e.write(ctx, storage.AddOp, storage.Path{dataGateways}, obj); err != nil {
		return fmt.Errorf("policies: set gateways: %w", err)
	}
	return nil
}

// PutGateway adds or replaces one gateway in data.gateways.
func (e *Engine) PutGateway(ctx context.Context, g registry.Gateway) error {
	if g.ID == "" {
		return fmt.Errorf("policies: put gateway: %w: empty id", ErrInvalidGateway)
	}
	if err := e.write(ctx, storage.AddOp, storage.Path{dataGateways, g.ID}, e.gatewayValue(ctx, &g)); err != nil {
		return fmt.Errorf("policies: put gateway %q: %w", g.ID, err)
	}
	return nil
}

// DeleteGateway removes one gateway from data.gateways. Deleting an unknown id is not an
// error. Note: OPA's in-memory store copies the gateways object to remove a key, so a
// delete costs time linear in the number of gateways (about a millisecond for 10,000);
// puts do not.
func (e *Engine) DeleteGateway(ctx context.Context, id string) error {
	err := e.write(ctx, storage.RemoveOp, storage.Path{dataGateways, id}, nil)
	if err != nil && !storage.IsNotFound(err) {
		return fmt.Errorf("policies: delete gateway %q: %w", id, err)
	}
	return nil
}

// SetPlatformAdmins replaces data.platform_admins, the user ids allowed every admin API
// action. Platform admins get no access to tenant gateways' traffic.
func (e *Engine) SetPlatformAdmins(ctx context.Context, ids []string) error {
	ids = slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return id == "" })
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if err := e.write(ctx, storage.AddOp, storage.Path{dataPlatformAdmins}, stringsTerm(ids).Value); err != nil {
		return fmt.Errorf("policies: set platform admins: %w", err)
	}
	return nil
}

// ErrInvalidTenantKeys is returned for tenant key metadata the engine cannot store: an
// invalid tenant, or a key that belongs to another tenant or provider than it is filed under.
var ErrInvalidTenantKeys = errors.New("invalid tenant keys")

// ActiveKeys is where tenants' active key metadata comes from; keystore.Keys implements it.
type ActiveKeys interface {
	// Active returns the active key of each provider of tenant, by provider.
	Active(tenant string) (map[string]keystore.APIKey, error)
	// ActiveTenants returns the tenants that have an active key.
	ActiveTenants() ([]string, error)
}

// tenantKeysValue converts a tenant's active keys to the document policies read as
// data.tenant_keys[tenant]: {provider: {id, provider, kind, scope, monthly_spend_cap_cents}}.
// Only active keys are kept. Label, last four, fingerprint and timestamps are left out, and
// an APIKey never holds the secret: policy data never holds secrets.
func tenantKeysValue(tenant string, active map[string]keystore.APIKey) (ast.Object, error) {
	if tenant == "" || strings.Contains(tenant, "/") {
		return nil, fmt.Errorf("%w: tenant %q", ErrInvalidTenantKeys, tenant)
	}
	items := make([][2]*ast.Term, 0, len(active))
	for _, provider := range slices.Sorted(maps.Keys(active)) {
		k := active[provider]
		if k.State != keystore.StateActive {
			continue
		}
		if k.Tenant != tenant || k.Provider != provider {
			return nil, fmt.Errorf("%w: key %q of %s/%s filed under %s/%s", ErrInvalidTenantKeys,
				k.ID, k.Tenant, k.Provider, tenant, provider)
		}
		scope := k.Scope
		if scope == nil {
			scope = []string{}
		}
		items = append(items, [2]*ast.Term{ast.StringTerm(provider), ast.ObjectTerm(
			[2]*ast.Term{ast.StringTerm("id"), ast.StringTerm(k.ID)},
			[2]*ast.Term{ast.StringTerm("provider"), ast.StringTerm(k.Provider)},
			[2]*ast.Term{ast.StringTerm("kind"), ast.StringTerm(string(k.Kind))},
			[2]*ast.Term{ast.StringTerm("scope"), stringsTerm(scope)},
			[2]*ast.Term{ast.StringTerm("monthly_spend_cap_cents"), ast.IntNumberTerm(int(k.MonthlySpendCapCents))},
		)})
	}
	return ast.NewObject(items...), nil
}

// SetTenantKeys replaces data.tenant_keys[tenant] with the active keys in active (by
// provider, as keystore.Keys.Active returns them; keys in any other state are left out). A
// tenant without an active key has no entry. Prefer SyncTenantKeys, which reads the keys
// itself and orders concurrent updates.
func (e *Engine) SetTenantKeys(ctx context.Context, tenant string, active map[string]keystore.APIKey) error {
	v, err := tenantKeysValue(tenant, active)
	if err != nil {
		return fmt.Errorf("policies: set tenant keys: %w", err)
	}
	if v.Len() == 0 {
		err = e.write(ctx, storage.RemoveOp, storage.Path{dataTenantKeys, tenant}, nil)
		if storage.IsNotFound(err) {
			err = nil
		}
	} else {
		err = e.write(ctx, storage.AddOp, storage.Path{dataTenantKeys, tenant}, v)
	}
	if err != nil {
		return fmt.Errorf("policies: set tenant keys %q: %w", tenant, err)
	}
	return nil
}

// SyncTenantKeys reads tenant's active keys from src and puts them in data.tenant_keys. Syncs
// are serialised, read and write together, so the last one to run writes what the store held
// after every change that triggered one: concurrent changes cannot leave older data behind.
// Subscribe it to keystore.Keys (Keys.Subscribe) to keep policy data in step.
func (e *Engine) SyncTenantKeys(ctx context.Context, src ActiveKeys, tenant string) error {
	e.keysMu.Lock()
	defer e.keysMu.Unlock()
	active, err := src.Active(tenant)
	if err != nil {
		return fmt.Errorf("policies: sync tenant keys %q: %w", tenant, err)
	}
	return e.SetTenantKeys(ctx, tenant, active)
}

// LoadTenantKeys replaces data.tenant_keys with the active keys of every tenant in src, in
// one write. Use it at start-up, after subscribing SyncTenantKeys to changes.
func (e *Engine) LoadTenantKeys(ctx context.Context, src ActiveKeys) error {
	e.keysMu.Lock()
	defer e.keysMu.Unlock()
	tenants, err := src.ActiveTenants()
	if err != nil {
		return fmt.Errorf("policies: load tenant keys: %w", err)
	}
	items := make([][2]*ast.Term, 0, len(tenants))
	for _, tenant := range tenants {
		active, err := src.Active(tenant)
		if err != nil {
			return fmt.Errorf("policies: load tenant keys %q: %w", tenant, err)
		}
		v, err := tenantKeysValue(tenant, active)
		if err != nil {
			return fmt.Errorf("policies: load tenant keys: %w", err)
		}
		if v.Len() > 0 {
			items = append(items, [2]*ast.Term{ast.StringTerm(tenant), ast.NewTerm(v)})
		}
	}
	if err := e.write(ctx, storage.AddOp, storage.Path{dataTenantKeys}, ast.NewObject(items...)); err != nil {
		return fmt.Errorf("policies: load tenant keys: %w", err)
	}
	return nil
}

// write applies one change in its own write transaction.
func (e *Engine) write(ctx context.Context, op storage.PatchOp, path storage.Path, v ast.Value) error {
	var value any
	if v != nil {
		value = v
	}
	e.shadow.dataMu.Lock()
	defer e.shadow.dataMu.Unlock()
	err := storage.Txn(ctx, e.store, storage.WriteParams, func(txn storage.Transaction) error {
		return e.store.Write(ctx, txn, op, path, value)
	})
	if err == nil {
		err = e.shadow.mirror(ctx, op, path, value) // the candidate reads the same gateways
	}
	e.gen.Add(1) // after the commit (and after a failed write too: cheap, and never wrong)
	return err
}
