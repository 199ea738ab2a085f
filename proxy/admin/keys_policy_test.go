package admin_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/proxy/admin"
)

// tenantKeysPolicy allows a tool call only when the gateway's tenant has an active key with
// a monthly spend cap, and puts the whole of data.tenant_keys in the reason, so the test
// sees exactly what policy sees.
const tenantKeysPolicy = `package moltgate.authz

import rego.v1

keys := object.get(data.tenant_keys, input.gateway.tenant, {})

decision := {"allow": true, "reason": json.marshal(data.tenant_keys)} if {
	some k in keys
	k.monthly_spend_cap_cents > 0
} else := {"allow": false, "reason": json.marshal(data.tenant_keys)}
`

// TestAdminKeysReachPolicy: keys added, activated and revoked through the admin API change
// what policy sees in data.tenant_keys (wired as serve wires it: SyncTenantKeys subscribed to
// the keystore), before the API answers; and policy data never holds a secret.
func TestAdminKeysReachPolicy(t *testing.T) {
	f := newKeysFixture(t)
	ctx := t.Context()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(tenantKeysPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	engine, err := policies.New(ctx, policies.Config{Dir: dir}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.keys.Subscribe(func(ctx context.Context, tenant string) {
		if err := engine.SyncTenantKeys(ctx, f.keys, tenant); err != nil {
			t.Errorf("sync %s: %v", tenant, err)
		}
	})
	const tenant = "org_acme"
	owner := f.orgUser("user_alice", tenant, "admin")
	var seen []string // every data.tenant_keys policy saw, for the secret scan
	sees := func(step string, allow bool, want string) {
		t.Helper()
		d, err := engine.Decide(ctx, &policies.Input{Protocol: policies.ProtocolHTTP, Action: "tools.invoke",
			Gateway: policies.GatewayRef{ID: "gw1", Tenant: tenant}})
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		seen = append(seen, d.Reason)
		var got, w any
		if err := json.Unmarshal([]byte(d.Reason), &got); err != nil {
			t.Fatalf("%s: reason %q: %v", step, d.Reason, err)
		}
		if err := json.Unmarshal([]byte(want), &w); err != nil {
			t.Fatal(err)
		}
		if d.Allow != allow || !reflect.DeepEqual(got, w) {
			t.Fatalf("%s: allow %v, policy sees\n %s\nwant allow %v,\n %s", step, d.Allow, d.Reason, allow, want)
		}
	}
	sees("no keys", false, `{}`)

	k1, err := owner.AddKey(ctx, tenant, admin.AddKeyRequest{Provider: "openai", Secret: oldKey, Label: "old",
		Scope: []string{"models/gpt-*"}, MonthlySpendCapCents: 5000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := owner.VerifyKey(ctx, tenant, k1.ID); err != nil {
		t.Fatal(err)
	}
	sees("added and verified, not active", false, `{}`)
	if _, err := owner.ActivateKey(ctx, tenant, k1.ID); err != nil {
		t.Fatal(err)
	}
	capped := `{"org_acme": {"openai": {"id": "` + k1.ID + `", "provider": "openai", "kind": "provider_key",
		"scope": ["models/gpt-*"], "monthly_spend_cap_cents": 5000}}}`
	sees("activated", true, capped)

	// A fresh engine's full load (what serve does at start) agrees with the incremental one.
	fresh, err := policies.New(ctx, policies.Config{Dir: dir}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := fresh.LoadTenantKeys(ctx, f.keys); err != nil {
		t.Fatal(err)
	}
	if d, err := fresh.Decide(ctx, &policies.Input{Protocol: policies.ProtocolHTTP, Action: "tools.invoke",
		Gateway: policies.GatewayRef{ID: "gw1", Tenant: tenant}}); err != nil || !d.Allow || !strings.Contains(d.Reason, k1.ID) {
		t.Fatalf("full load: %+v, %v", d, err)
	}

	// Zero-downtime switch to a key without a cap: policy follows the active key.
	k2, err := owner.AddKey(ctx, tenant, admin.AddKeyRequest{Provider: "openai", Secret: newKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := owner.VerifyKey(ctx, tenant, k2.ID); err != nil {
		t.Fatal(err)
	}
	sees("new key verified, old still active", true, capped)
	if _, err := owner.ActivateKey(ctx, tenant, k2.ID); err != nil {
		t.Fatal(err)
	}
	uncapped := `{"org_acme": {"openai": {"id": "` + k2.ID + `", "provider": "openai", "kind": "provider_key",
		"scope": [], "monthly_spend_cap_cents": 0}}}`
	sees("switched", false, uncapped)
	if _, err := owner.RevokeKey(ctx, tenant, k1.ID, false); err != nil {
		t.Fatal(err)
	}
	sees("old revoked", false, uncapped)
	// A refused revoke (the active key, without force) changes nothing.
	_, err = owner.RevokeKey(ctx, tenant, k2.ID, false)
	wantAPIError(t, err, 409, "key_state")
	sees("refused revoke", false, uncapped)
	if _, err := owner.RevokeKey(ctx, tenant, k2.ID, true); err != nil {
		t.Fatal(err)
	}
	sees("active key revoked", false, `{}`)

	if _, err := owner.ActivateKey(ctx, tenant, k1.ID); err == nil {
		t.Fatal("a revoked key was activated")
	}
	sees("refused activate", false, `{}`)

	all := strings.Join(seen, "\n")
	for _, k := range []string{k1.Last4, k1.Fingerprint, k2.Last4, k2.Fingerprint} {
		if k == "" || strings.Contains(all, k) {
			t.Errorf("policy data holds %q (or it is empty)", k)
		}
	}
	for _, s := range testSecrets {
		if strings.Contains(all, s) || strings.Contains(all, s[:len(s)/2]) {
			t.Errorf("policy data holds a test secret")
		}
	}
	f.scan(t)
}
