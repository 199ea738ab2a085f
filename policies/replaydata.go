package policies

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/registry"
)

// ReplayData is the data a decision was made with, the documents moltgate keeps in policy
// data itself: a replay record's "data", testdata/replay/data.json, and the --data file of
// `moltgate policy eval`.
type ReplayData struct {
	// Gateways are the registry's records (moltgate gateway show, the admin API's gateways);
	// tokens, hashes and upstreams are not read.
	Gateways       []registry.Gateway `json:"gateways"`
	PlatformAdmins []string           `json:"platform_admins"`
	// TenantKeys is data.tenant_keys as policies read it: by tenant, then provider, the
	// active key's {id, provider, kind, scope, monthly_spend_cap_cents}.
	TenantKeys map[string]map[string]TenantKey `json:"tenant_keys"`
}

// TenantKey is one entry of data.tenant_keys[tenant][provider]: an active key, never its
// secret.
type TenantKey struct {
	ID                   string        `json:"id"`
	Provider             string        `json:"provider"`
	Kind                 keystore.Kind `json:"kind"`
	Scope                []string      `json:"scope"`
	MonthlySpendCapCents int64         `json:"monthly_spend_cap_cents"`
}

// Apply replaces e's gateways, platform admins and tenant keys with d's. A tenant key that
// names another provider than the one it is filed under, or an unknown kind, is an error.
func (d *ReplayData) Apply(ctx context.Context, e *Engine) error {
	if err := e.SetGateways(ctx, d.Gateways); err != nil {
		return err
	}
	if err := e.SetPlatformAdmins(ctx, d.PlatformAdmins); err != nil {
		return err
	}
	items := make([][2]*ast.Term, 0, len(d.TenantKeys))
	for _, tenant := range slices.Sorted(maps.Keys(d.TenantKeys)) {
		active := make(map[string]keystore.APIKey, len(d.TenantKeys[tenant]))
		for provider, k := range d.TenantKeys[tenant] {
			if k.Kind != keystore.KindProviderKey && k.Kind != keystore.KindChannelCredential {
				return fmt.Errorf("policies: tenant_keys.%s.%s.kind: %q, want %q or %q", tenant, provider, k.Kind,
					keystore.KindProviderKey, keystore.KindChannelCredential)
			}
			active[provider] = keystore.APIKey{ID: k.ID, Tenant: tenant, Provider: k.Provider, Kind: k.Kind, Scope: k.Scope,
				MonthlySpendCapCents: k.MonthlySpendCapCents, State: keystore.StateActive}
		}
		v, err := tenantKeysValue(tenant, active)
		if err != nil {
			return fmt.Errorf("policies: tenant_keys: %w", err)
		}
		if v.Len() > 0 {
			items = append(items, [2]*ast.Term{ast.StringTerm(tenant), ast.NewTerm(v)})
		}
	}
	if err := e.write(ctx, storage.AddOp, storage.Path{dataTenantKeys}, ast.NewObject(items...)); err != nil {
		return fmt.Errorf("policies: tenant_keys: %w", err)
	}
	return nil
}
