package keystore

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/moltgate/moltgate/audit"
)

// TestKeysSubscribe: every change of a tenant's keys notifies subscribers once it is stored,
// before the call returns, so a subscriber reading Active sees the change (the policy engine
// keeps data.tenant_keys in step this way). ActiveTenants lists the tenants with an active key.
func TestKeysSubscribe(t *testing.T) {
	t.Parallel()
	kv := boltKV(t)
	prov := newFakeProvider(t, oldKey, newKey)
	keys, err := NewKeys(KeysConfig{Keystore: saltedKeystore(t, kv), KV: kv, Audit: &recorder{}, Verifier: prov.verifier()})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string // "tenant:active key id of anthropic" at each notification
	keys.Subscribe(func(ctx context.Context, tenant string) {
		if ctx.Err() != nil {
			t.Errorf("subscriber got a cancelled context: %v", ctx.Err())
		}
		active, err := keys.Active(tenant)
		if err != nil {
			t.Error(err)
		}
		mu.Lock()
		seen = append(seen, tenant+":"+active["anthropic"].ID)
		mu.Unlock()
	})
	take := func() []string {
		mu.Lock()
		defer mu.Unlock()
		out := seen
		seen = nil
		return out
	}
	want := func(step string, w ...string) {
		t.Helper()
		if got := take(); !slices.Equal(got, w) {
			t.Fatalf("%s: notifications %q, want %q", step, got, w)
		}
	}
	// A caller whose context is cancelled right after the change still gets its subscribers run.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	admin := audit.Actor{Kind: "admin_token", ID: "admin-token"}

	k1, err := keys.Add(ctx, AddRequest{Tenant: "tenant-a", Provider: "anthropic", Secret: Secret(oldKey)})
	if err != nil {
		t.Fatal(err)
	}
	want("add", "tenant-a:")
	if _, err := keys.Add(ctx, AddRequest{Tenant: "bad tenant", Provider: "anthropic", Secret: Secret(oldKey)}); err == nil {
		t.Fatal("invalid tenant accepted")
	}
	want("refused add")
	if _, err := keys.Verify(t.Context(), admin, "tenant-a", k1.ID); err != nil {
		t.Fatal(err)
	}
	want("verify", "tenant-a:")
	if _, err := keys.Activate(ctx, "tenant-a", k1.ID); err != nil {
		t.Fatal(err)
	}
	want("activate", "tenant-a:"+k1.ID)
	if _, err := keys.Add(ctx, AddRequest{Tenant: "tenant-b", Provider: "anthropic", Secret: Secret(newKey)}); err != nil {
		t.Fatal(err)
	}
	want("add b", "tenant-b:")
	if got, err := keys.ActiveTenants(); err != nil || !slices.Equal(got, []string{"tenant-a"}) {
		t.Fatalf("active tenants: %q, %v", got, err)
	}
	if _, err := keys.Revoke(ctx, "tenant-a", k1.ID, false); err == nil {
		t.Fatal("revoke of the active key without force succeeded")
	}
	want("refused revoke", "tenant-a:"+k1.ID)
	if _, err := keys.Revoke(ctx, "tenant-a", k1.ID, true); err != nil {
		t.Fatal(err)
	}
	want("forced revoke", "tenant-a:")
	if got, err := keys.ActiveTenants(); err != nil || len(got) != 0 {
		t.Fatalf("active tenants after revoke: %q, %v", got, err)
	}
}
