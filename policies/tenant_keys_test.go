package policies

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/store"
)

// dataJSON reads a document of the engine's store as JSON.
func dataJSON(t *testing.T, e *Engine, path ...string) string {
	t.Helper()
	v, err := storage.ReadOne(t.Context(), e.store, storage.Path(path))
	if err != nil {
		t.Fatal(err)
	}
	if av, ok := v.(ast.Value); ok {
		if v, err = ast.JSON(av); err != nil {
			t.Fatal(err)
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func sameJSON(t *testing.T, what, got, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("%s:\n got %s\nwant %s", what, got, want)
	}
}

func TestSetTenantKeys(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e, err := New(ctx, Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "empty", dataJSON(t, e, "tenant_keys"), `{}`)
	active := map[string]keystore.APIKey{
		"openai": {ID: "k_0000000000000001", Tenant: "org_acme", Provider: "openai", Kind: keystore.KindProviderKey,
			Label: "LABEL-prod", Last4: "WXYZ", Fingerprint: "f1f2f3f4f5f6f7f8", Scope: []string{"models/gpt-*"},
			MonthlySpendCapCents: 5000, State: keystore.StateActive},
		"telegram": {ID: "k_0000000000000002", Tenant: "org_acme", Provider: "telegram", Kind: keystore.KindChannelCredential,
			State: keystore.StateActive},
		// Not active: left out.
		"anthropic": {ID: "k_0000000000000003", Tenant: "org_acme", Provider: "anthropic", State: keystore.StateVerified},
	}
	if err := e.SetTenantKeys(ctx, "org_acme", active); err != nil {
		t.Fatal(err)
	}
	got := dataJSON(t, e, "tenant_keys")
	sameJSON(t, "tenant_keys", got, `{"org_acme": {
		"openai": {"id": "k_0000000000000001", "provider": "openai", "kind": "provider_key",
			"scope": ["models/gpt-*"], "monthly_spend_cap_cents": 5000},
		"telegram": {"id": "k_0000000000000002", "provider": "telegram", "kind": "channel_credential",
			"scope": [], "monthly_spend_cap_cents": 0}}}`)
	for _, s := range []string{"LABEL-prod", "WXYZ", "f1f2f3f4f5f6f7f8", "org_acme\":{\"anthropic"} {
		if strings.Contains(got, s) {
			t.Errorf("tenant_keys holds %q", s)
		}
	}

	// Wrongly filed keys are refused and change nothing.
	wrong := map[string]keystore.APIKey{"openai": {ID: "k_1", Tenant: "org_other", Provider: "openai", State: keystore.StateActive}}
	if err := e.SetTenantKeys(ctx, "org_acme", wrong); !errors.Is(err, ErrInvalidTenantKeys) {
		t.Fatalf("key of another tenant: %v", err)
	}
	wrong = map[string]keystore.APIKey{"anthropic": {ID: "k_1", Tenant: "org_acme", Provider: "openai", State: keystore.StateActive}}
	if err := e.SetTenantKeys(ctx, "org_acme", wrong); !errors.Is(err, ErrInvalidTenantKeys) {
		t.Fatalf("key of another provider: %v", err)
	}
	if err := e.SetTenantKeys(ctx, "", nil); !errors.Is(err, ErrInvalidTenantKeys) {
		t.Fatalf("empty tenant: %v", err)
	}
	sameJSON(t, "after refusals", dataJSON(t, e, "tenant_keys"), got)

	// No active key: the tenant's entry goes; removing an absent one is no error.
	if err := e.SetTenantKeys(ctx, "org_acme", map[string]keystore.APIKey{"anthropic": active["anthropic"]}); err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "no active key", dataJSON(t, e, "tenant_keys"), `{}`)
	if err := e.SetTenantKeys(ctx, "org_none", nil); err != nil {
		t.Fatal(err)
	}

	// Reload keeps the document.
	if err := e.SetTenantKeys(ctx, "org_acme", active); err != nil {
		t.Fatal(err)
	}
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "after reload", dataJSON(t, e, "tenant_keys"), got)
}

// TestTenantKeysReservedDocument: a policy set's data files cannot define data.tenant_keys.
func TestTenantKeysReservedDocument(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src, err := os.ReadFile("../deploy/policy-examples/tenant-keys/authz.rego")
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"authz.rego":     string(src),
		"spend_cap.rego": "package moltgate.spend_cap\n",
		"data.json":      `{"tenant_keys": {"org_acme": {}}}`,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := New(t.Context(), Config{Dir: dir}, nil, nil); err == nil || !strings.Contains(err.Error(), "data.tenant_keys") {
		t.Fatalf("data file defining data.tenant_keys: got %v", err)
	}
}

// acceptAll is a verifier that accepts every key.
type acceptAll struct{}

func (acceptAll) Verify(context.Context, string, keystore.Kind, keystore.Secret) error { return nil }

type nopAudit struct{}

func (nopAudit) Emit(context.Context, audit.Event) error { return nil }

// newKeys is a real keystore.Keys on a bolt file.
func newKeys(t *testing.T) *keystore.Keys {
	t.Helper()
	kv, err := store.OpenBolt(filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })
	ring, err := keystore.NewKeyring(1, bytes.Repeat([]byte{3}, keystore.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := keystore.NewKeys(keystore.KeysConfig{Keystore: keystore.NewWithSalts(ring, kv), KV: kv,
		Audit: nopAudit{}, Verifier: acceptAll{}})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

const (
	secretA = "sk-proj-SECRETAAAAAAAAAAAAAAAAAAAA-a1b2"
	secretB = "sk-ant-SECRETBBBBBBBBBBBBBBBBBBBBB-c3d4"
)

// TestTenantKeysFollowKeystore: with SyncTenantKeys subscribed to a real keystore, what
// policy sees follows add, activate and revoke, a full load rebuilds the document, and the
// document never holds a secret (nor its last four, fingerprint or label).
func TestTenantKeysFollowKeystore(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e, err := New(ctx, Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	keys := newKeys(t)
	var syncErr error
	keys.Subscribe(func(ctx context.Context, tenant string) {
		if err := e.SyncTenantKeys(ctx, keys, tenant); err != nil {
			syncErr = err
		}
	})
	actor := audit.Actor{Kind: "admin_token", ID: "admin-token"}
	add := func(tenant, provider, secret string, spendCap int64) keystore.APIKey {
		t.Helper()
		k, err := keys.Add(ctx, keystore.AddRequest{Tenant: tenant, Provider: provider, Secret: keystore.Secret(secret),
			Label: "LABEL-" + provider, Scope: []string{"models/*"}, MonthlySpendCapCents: spendCap})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := keys.Verify(ctx, actor, tenant, k.ID); err != nil {
			t.Fatal(err)
		}
		return k
	}
	ka := add("org_acme", "openai", secretA, 5000)
	kb := add("org_acme", "anthropic", secretB, 0)
	sameJSON(t, "added and verified", dataJSON(t, e, "tenant_keys"), `{}`)
	for _, k := range []keystore.APIKey{ka, kb} {
		if _, err := keys.Activate(ctx, "org_acme", k.ID); err != nil {
			t.Fatal(err)
		}
	}
	want := `{"org_acme": {
		"openai": {"id": "` + ka.ID + `", "provider": "openai", "kind": "provider_key", "scope": ["models/*"], "monthly_spend_cap_cents": 5000},
		"anthropic": {"id": "` + kb.ID + `", "provider": "anthropic", "kind": "provider_key", "scope": ["models/*"], "monthly_spend_cap_cents": 0}}}`
	got := dataJSON(t, e, "tenant_keys")
	sameJSON(t, "activated", got, want)

	// Nothing that identifies a secret is in policy data, anywhere.
	all := dataJSON(t, e)
	for _, k := range []keystore.APIKey{ka, kb} {
		for _, s := range []string{k.Last4, k.Fingerprint, k.Label} {
			if s == "" || strings.Contains(all, s) {
				t.Errorf("policy data holds %q (or it is empty)", s)
			}
		}
	}
	for _, s := range []string{secretA, secretB} {
		for _, form := range []string{s, s[:len(s)/2], hex.EncodeToString([]byte(s))} {
			if strings.Contains(all, form) {
				t.Errorf("policy data holds a test secret (form of %d chars)", len(form))
			}
		}
	}

	// A fresh engine loading everything sees the same.
	e2, err := New(ctx, Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e2.SetTenantKeys(ctx, "org_stale", map[string]keystore.APIKey{"openai": {ID: "k_1", Tenant: "org_stale",
		Provider: "openai", State: keystore.StateActive}}); err != nil {
		t.Fatal(err)
	}
	if err := e2.LoadTenantKeys(ctx, keys); err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "full load", dataJSON(t, e2, "tenant_keys"), want)

	// Revoking the active key (forced) takes it out of policy data at once.
	if _, err := keys.Revoke(ctx, "org_acme", ka.ID, true); err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "revoked", dataJSON(t, e, "tenant_keys"), `{"org_acme": {
		"anthropic": {"id": "`+kb.ID+`", "provider": "anthropic", "kind": "provider_key", "scope": ["models/*"], "monthly_spend_cap_cents": 0}}}`)
	if _, err := keys.Revoke(ctx, "org_acme", kb.ID, true); err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "all revoked", dataJSON(t, e, "tenant_keys"), `{}`)
	if syncErr != nil {
		t.Fatal(syncErr)
	}
}

// TestTenantKeysExamplePolicy runs the example policy in deploy/policy-examples/tenant-keys, which reads
// data.tenant_keys: its Rego tests, and its decisions through the real engine.
func TestTenantKeysExamplePolicy(t *testing.T) {
	t.Parallel()
	const dir = "../deploy/policy-examples/tenant-keys"
	results, err := RunTests(t.Context(), os.DirFS(dir))
	if err != nil {
		t.Fatal(err)
	}
	if len(results) < 5 {
		t.Fatalf("%d rego tests, want 5", len(results))
	}
	for _, r := range results {
		if r.Failed() {
			t.Errorf("%v", r)
		}
	}

	ctx := t.Context()
	e, err := New(ctx, Config{Dir: dir}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := &Input{Protocol: ProtocolHTTP, Action: "tools.invoke", Gateway: GatewayRef{ID: "gw1", Tenant: "org_acme"}}
	decide := func(step string, allow bool, reason string) {
		t.Helper()
		d, err := e.Decide(ctx, in)
		if err != nil || d.Allow != allow || d.Reason != reason || (!allow && d.Status != 403) {
			t.Fatalf("%s: got %+v, %v; want allow=%v reason=%q", step, d, err, allow, reason)
		}
	}
	decide("no keys", false, "no_capped_key")
	key := keystore.APIKey{ID: "k_0000000000000001", Tenant: "org_acme", Provider: "openai", Kind: keystore.KindProviderKey,
		MonthlySpendCapCents: 100, State: keystore.StateActive}
	if err := e.SetTenantKeys(ctx, "org_acme", map[string]keystore.APIKey{"openai": key}); err != nil {
		t.Fatal(err)
	}
	decide("capped key", true, "ok")
	key.MonthlySpendCapCents = 0
	if err := e.SetTenantKeys(ctx, "org_acme", map[string]keystore.APIKey{"openai": key}); err != nil {
		t.Fatal(err)
	}
	decide("uncapped key", false, "no_capped_key")
}
