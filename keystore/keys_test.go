package keystore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moltgate/moltgate/audit"
)

// fakeProvider is a loopback stand-in for a provider API: GET /v1/models accepts only the
// keys it was given, and records every credential it saw.
type fakeProvider struct {
	*httptest.Server
	mu    sync.Mutex
	valid map[string]bool
}

func newFakeProvider(t *testing.T, valid ...string) *fakeProvider {
	p := &fakeProvider{valid: map[string]bool{}}
	for _, v := range valid {
		p.valid[v] = true
	}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		ok := p.valid[r.Header.Get("x-api-key")] && r.Header.Get("anthropic-version") != ""
		p.mu.Unlock()
		if r.URL.Path != "/v1/models" || !ok {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}`)
			return
		}
		fmt.Fprint(w, `{"data":[{"id":"claude-x"}]}`)
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *fakeProvider) verifier() Verifier {
	return &HTTPVerifier{Client: p.Client(), Endpoints: map[string]Endpoint{
		"anthropic": {URL: p.URL + "/v1/models", Header: "x-api-key", Extra: map[string]string{"anthropic-version": "2023-06-01"}},
	}}
}

const (
	oldKey = "sk-ant-api03-OLDOLDOLDOLDOLDOLD-1111"
	newKey = "sk-ant-api03-NEWNEWNEWNEWNEWNEW-2222"
	badKey = "sk-ant-api03-BADBADBADBADBADBAD-3333"
)

// TestKeyLifecycle is the zero-downtime provider key rotation of issue 4: add new, verify,
// switch, revoke old; on both backends.
func TestKeyLifecycle(t *testing.T) {
	for name, open := range backends() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			kv := open(t)
			rec := &recorder{}
			prov := newFakeProvider(t, oldKey, newKey)
			now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
			keys, err := NewKeys(KeysConfig{Keystore: saltedKeystore(t, kv), KV: kv, Audit: rec, Verifier: prov.verifier(),
				Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			admin := audit.Actor{Kind: "admin_token", ID: "admin-token"}
			proxyActor := audit.Actor{Kind: "service", ID: "proxy"}

			secret := Secret(oldKey)
			k1, err := keys.Add(ctx, AddRequest{Tenant: "tenant-a", Provider: "anthropic", Secret: secret,
				Scope: []string{"model:claude-*"}, MonthlySpendCapCents: 50000})
			if err != nil {
				t.Fatal(err)
			}
			if string(secret) == oldKey {
				t.Fatal("Add did not clear the caller's secret buffer")
			}
			if k1.State != StateAdded || k1.Last4 != "1111" || len(k1.Fingerprint) != 16 || k1.Kind != KindProviderKey {
				t.Fatalf("added key: got %+v", k1)
			}
			if _, err := keys.Activate(ctx, "tenant-a", k1.ID); !errors.Is(err, ErrKeyState) {
				t.Fatalf("activate unverified: got %v, want ErrKeyState", err)
			}
			if _, err := keys.Verify(ctx, admin, "tenant-a", k1.ID); err != nil {
				t.Fatal(err)
			}
			if k, err := keys.Activate(ctx, "tenant-a", k1.ID); err != nil || k.State != StateActive {
				t.Fatalf("activate: got %+v, %v", k, err)
			}
			opener, err := NewOpener(keys, proxyActor, ReasonUpstreamCredential, rec)
			if err != nil {
				t.Fatal(err)
			}
			got, s, err := opener.OpenActive(ctx, "tenant-a", "anthropic")
			if err != nil || string(s) != oldKey || got.ID != k1.ID {
				t.Fatalf("open active: got %s, %v", got.ID, err)
			}

			// A bad key is refused by the provider and stays "added".
			kb, _ := keys.Add(ctx, AddRequest{Tenant: "tenant-a", Provider: "anthropic", Secret: Secret(badKey)})
			if _, err := keys.Verify(ctx, admin, "tenant-a", kb.ID); !errors.Is(err, ErrKeyRejected) {
				t.Fatalf("verify bad key: got %v, want ErrKeyRejected", err)
			}

			// Rotate: add new, verify, switch, revoke old.
			k2, err := keys.Add(ctx, AddRequest{Tenant: "tenant-a", Provider: "anthropic", Secret: Secret(newKey)})
			if err != nil {
				t.Fatal(err)
			}
			if k2.Fingerprint == k1.Fingerprint {
				t.Fatal("two keys share a fingerprint")
			}
			if _, err := keys.Verify(ctx, admin, "tenant-a", k2.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := keys.Revoke(ctx, "tenant-a", k1.ID, false); !errors.Is(err, ErrKeyState) {
				t.Fatalf("revoke active without force: got %v, want ErrKeyState", err)
			}
			if _, err := keys.Activate(ctx, "tenant-a", k2.ID); err != nil {
				t.Fatal(err)
			}
			if k, _ := keys.Get("tenant-a", k1.ID); k.State != StateVerified {
				t.Fatalf("old key after switch: got %s, want verified", k.State)
			}
			if _, s, err := opener.OpenActive(ctx, "tenant-a", "anthropic"); err != nil || string(s) != newKey {
				t.Fatalf("open active after switch: %v", err)
			}
			if k, err := keys.Revoke(ctx, "tenant-a", k1.ID, false); err != nil || k.State != StateRevoked {
				t.Fatalf("revoke old: got %+v, %v", k, err)
			}
			if _, err := opener.Open(ctx, "tenant-a", k1.ID); !errors.Is(err, ErrKeyState) {
				t.Fatalf("open revoked: got %v, want ErrKeyState", err)
			}
			if _, err := keys.Activate(ctx, "tenant-a", k1.ID); !errors.Is(err, ErrKeyState) {
				t.Fatalf("activate revoked: got %v", err)
			}
			if k, err := keys.Revoke(ctx, "tenant-a", k2.ID, true); err != nil || k.State != StateRevoked {
				t.Fatalf("forced revoke of active: %+v, %v", k, err)
			}
			if _, _, err := opener.OpenActive(ctx, "tenant-a", "anthropic"); !errors.Is(err, ErrKeyNotFound) {
				t.Fatalf("open active after forced revoke: got %v", err)
			}

			// Channel credentials are the same records; tenants never see each other's.
			cc, err := keys.Add(ctx, AddRequest{Tenant: "tenant-b", Provider: "telegram", Kind: KindChannelCredential,
				Secret: Secret("123456:telegram-bot-token-abcdef")})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := keys.Get("tenant-a", cc.ID); !errors.Is(err, ErrKeyNotFound) {
				t.Fatalf("cross-tenant get: got %v, want ErrKeyNotFound", err)
			}
			if _, err := opener.Open(ctx, "tenant-a", cc.ID); !errors.Is(err, ErrKeyNotFound) {
				t.Fatalf("cross-tenant open: got %v, want ErrKeyNotFound", err)
			}
			if list, _ := keys.List("tenant-a"); len(list) != 3 {
				t.Fatalf("list tenant-a: got %d keys, want 3", len(list))
			}
			if list, _ := keys.List("tenant-b"); len(list) != 1 || list[0].Kind != KindChannelCredential {
				t.Fatalf("list tenant-b: got %+v", list)
			}

			// Every open was audited with actor, record and reason.
			var opens int
			for _, e := range rec.events {
				if e.Type == EventSecretOpen {
					opens++
					if e.Actor.Kind == "" || e.Details["record"] == "" || e.Details["purpose"] == "" || e.Tenant == "" {
						t.Fatalf("open event lacks who/which/why: %+v", e)
					}
				}
			}
			if opens < 6 {
				t.Fatalf("open events: got %d, want at least 6", opens)
			}
			scanForSecrets(t, "audit events and logs", rec.dump(), oldKey, newKey, badKey, "telegram-bot-token-abcdef")
		})
	}
}

func TestOpenerFailsClosedWhenAuditFails(t *testing.T) {
	kv := boltKV(t)
	rec := &recorder{}
	keys, _ := NewKeys(KeysConfig{Keystore: saltedKeystore(t, kv), KV: kv, Audit: rec})
	k, err := keys.Add(t.Context(), AddRequest{Tenant: "t", Provider: "openai", Secret: Secret("sk-proj-abcdefghijklmnop")})
	if err != nil {
		t.Fatal(err)
	}
	o, err := NewOpener(keys, audit.Actor{Kind: "service", ID: "proxy"}, ReasonUpstreamCredential, rec)
	if err != nil {
		t.Fatal(err)
	}
	rec.fail = errors.New("spool full")
	if s, err := o.Open(t.Context(), "t", k.ID); err == nil || s != nil {
		t.Fatalf("open with failing audit: got %d bytes, %v; want refusal", len(s), err)
	}
	if _, err := NewOpener(keys, audit.Actor{Kind: "service", ID: "x"}, "", rec); err == nil {
		t.Fatal("opener without a reason accepted")
	}
	if _, err := NewOpener(keys, audit.Actor{Kind: "service", ID: "x"}, ReasonProvision, nil); err == nil {
		t.Fatal("opener without an audit sink accepted")
	}
	if _, err := NewOpener(keys, audit.Actor{Kind: "service"}, ReasonProvision, rec); err == nil {
		t.Fatal("opener without an actor id accepted")
	}
	if _, err := NewOpener(keys, audit.Actor{Kind: "service", ID: "x"}, "debug", rec); err == nil ||
		!strings.Contains(err.Error(), "upstream-credential") {
		t.Fatalf("opener for an undeclared reason: %v", err)
	}
}

func TestAddValidates(t *testing.T) {
	kv := boltKV(t)
	keys, _ := NewKeys(KeysConfig{Keystore: saltedKeystore(t, kv), KV: kv, Audit: &recorder{}})
	_, err := keys.Add(context.Background(), AddRequest{Tenant: "bad tenant", Provider: "Bad!", Kind: "x",
		Secret: Secret("short"), Scope: []string{"ok", "not ok"}, MonthlySpendCapCents: -1})
	if !errors.Is(err, ErrKeyInvalid) {
		t.Fatalf("got %v, want ErrKeyInvalid", err)
	}
	for _, field := range []string{"tenant", "provider", "kind", "key:", "scope[1]", "monthly_spend_cap_cents"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %s: %v", field, err)
		}
	}
	if strings.Contains(err.Error(), "short") {
		t.Fatal("error quotes the secret")
	}
}
