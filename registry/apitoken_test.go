package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAPITokens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	r, s, kv := newTestRegistry(t, path)
	if _, err := r.Create(t.Context(), validGateway(), tok1); err != nil {
		t.Fatal(err)
	}
	other := validGateway()
	other.ID = "gw2"
	if _, err := r.Create(t.Context(), other, tok2); err != nil {
		t.Fatal(err)
	}

	tok, id, g, err := r.CreateAPIToken(t.Context(), "gw1", NewAPIToken{Name: "ci deploy", Role: RoleViewer, TTL: time.Hour, CreatedBy: "user_owner"})
	if err != nil {
		t.Fatal(err)
	}
	if !ValidAPIToken(tok) || !ValidAPITokenID(id) || ValidToken(tok) {
		t.Fatalf("token %q id %q: want mga_ and 64 hex, at_ and 16 hex", tok, id)
	}
	rec := g.APITokens[id]
	if rec.Name != "ci deploy" || rec.Role != RoleViewer || rec.CreatedBy != "user_owner" || rec.Expires.Sub(rec.Created) != time.Hour {
		t.Fatalf("record: %+v", rec)
	}
	stored, _ := kv.Get(Bucket, "gw1")
	if strings.Contains(string(stored), strings.TrimPrefix(tok, APITokenPrefix)) {
		t.Fatal("the API token is stored in clear")
	}
	if s.gws["gw1"].APITokens[id].Role != RoleViewer {
		t.Fatal("the policy data did not get the token")
	}

	e, gotID, gotRec, ok := r.ByAPIToken(tok)
	if !ok || e.ID != "gw1" || gotID != id || gotRec.Role != RoleViewer {
		t.Fatalf("ByAPIToken: %v %v %q %+v", ok, e, gotID, gotRec)
	}
	last := "0"
	if strings.HasSuffix(tok, "0") {
		last = "1"
	}
	if _, _, _, ok := r.ByAPIToken(tok[:len(tok)-1] + last); ok {
		t.Fatal("a token differing in its last digit was found")
	}
	if _, ok := r.ByToken(tok); ok {
		t.Fatal("an API token identified as a gateway token")
	}
	if _, _, _, ok := r.ByAPIToken(APITokenPrefix + tok1); ok {
		t.Fatal("the gateway token, prefixed, identified as an API token")
	}
	if gotRec.Expired(gotRec.Created.Add(59*time.Minute)) || !gotRec.Expired(gotRec.Expires) {
		t.Fatal("Expired: wrong around the expiry")
	}

	// Any other change of the gateway keeps the token, even one that tries to drop or
	// forge tokens (Update leaves them as it leaves the gateway token); a reload from the
	// store finds it.
	forged := APIToken{Name: "forged", Role: RoleAdmin, Hash: make([]byte, 32)}
	if _, err := r.Update(t.Context(), "gw1", func(g *Gateway) error {
		g.Members = map[string]string{"u": RoleViewer}
		g.APITokens = map[string]APIToken{"at_00000000000000ff": forged}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.Get("gw1"); len(got.APITokens) != 1 || got.APITokens[id].Role != RoleViewer || got.Members["u"] != RoleViewer {
		t.Fatalf("after another change: tokens %+v members %v", got.APITokens, got.Members)
	}
	r2, _ := newTestRegistryOn(t, kv)
	if e, _, _, ok := r2.ByAPIToken(tok); !ok || e.ID != "gw1" {
		t.Fatal("a registry loaded from the store does not know the token")
	}

	// A replica following the revocation forgets the token too.
	if _, err := r.RevokeAPIToken(t.Context(), "gw1", id); err != nil {
		t.Fatal(err)
	}
	if _, _, _, ok := r.ByAPIToken(tok); ok {
		t.Fatal("a revoked token is still found")
	}
	if err := r2.Changed(t.Context(), Bucket, "gw1"); err != nil {
		t.Fatal(err)
	}
	if _, _, _, ok := r2.ByAPIToken(tok); ok {
		t.Fatal("a replica still finds a revoked token")
	}
	if _, err := r.RevokeAPIToken(t.Context(), "gw1", id); !errors.Is(err, ErrUnknownAPIToken) {
		t.Fatalf("revoking twice: %v, want ErrUnknownAPIToken", err)
	}

	// Deleting the gateway forgets its tokens.
	tok3, _, _, err := r.CreateAPIToken(t.Context(), "gw2", NewAPIToken{Name: "n", Role: RoleOperator})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Delete(t.Context(), "gw2"); err != nil {
		t.Fatal(err)
	}
	if _, _, _, ok := r.ByAPIToken(tok3); ok || len(r.byAPIToken) != 0 {
		t.Fatalf("after the gateway's deletion: found %v, index %d", ok, len(r.byAPIToken))
	}
}

func TestAPITokenRefusals(t *testing.T) {
	r, _, kv := newTestRegistry(t, filepath.Join(t.TempDir(), "m.db"))
	if _, err := r.Create(t.Context(), validGateway(), tok1); err != nil {
		t.Fatal(err)
	}
	before, _ := kv.Get(Bucket, "gw1")
	for name, n := range map[string]NewAPIToken{
		"no name":       {Role: RoleViewer},
		"long name":     {Name: strings.Repeat("n", 65), Role: RoleViewer},
		"control":       {Name: "a\nb", Role: RoleViewer},
		"bidi override": {Name: "ci \u202etoken", Role: RoleViewer},
		"unknown role":  {Name: "n", Role: "owner"},
		"negative ttl":  {Name: "n", Role: RoleViewer, TTL: -time.Second},
		"invalid utf-8": {Name: "a\xffb", Role: RoleViewer},
	} {
		if _, _, _, err := r.CreateAPIToken(t.Context(), "gw1", n); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	// Named by field, as the caller gave them: the token never had an id.
	_, _, _, err := r.CreateAPIToken(t.Context(), "gw1", NewAPIToken{Name: "", Role: "owner"})
	if msg := fmt.Sprint(err); !strings.Contains(msg, `role: "owner": want viewer, operator or admin`) || !strings.Contains(msg, "name: want") || strings.Contains(msg, "at_") {
		t.Errorf("refusal: %v", err)
	}
	if _, _, _, err := r.CreateAPIToken(t.Context(), "nope", NewAPIToken{Name: "n", Role: RoleViewer}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown gateway: %v", err)
	}
	if after, _ := kv.Get(Bucket, "gw1"); string(after) != string(before) {
		t.Fatal("a refused token changed the record")
	}
	for range MaxAPITokens {
		if _, _, _, err := r.CreateAPIToken(t.Context(), "gw1", NewAPIToken{Name: "n", Role: RoleViewer}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, _, err := r.CreateAPIToken(t.Context(), "gw1", NewAPIToken{Name: "n", Role: RoleViewer}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("token %d: %v, want ErrInvalid", MaxAPITokens+1, err)
	}
	// A record in the store whose token hash is cut short is refused at load and when a
	// replica follows it, never indexed (the index would panic on it).
	raw, _ := kv.Get(Bucket, "gw1")
	var g Gateway
	json.Unmarshal(raw, &g)
	for id, tok := range g.APITokens {
		tok.Hash = tok.Hash[:3]
		g.APITokens[id] = tok
		break
	}
	cut, _ := json.Marshal(g)
	if err := kv.Put(Bucket, "gw1", cut); err != nil {
		t.Fatal(err)
	}
	if err := r.Changed(t.Context(), Bucket, "gw1"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("following a cut hash: %v, want ErrInvalid", err)
	}
	if _, err := New(t.Context(), kv, r.keys, &recordingSyncer{gws: map[string]Gateway{}}, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("loading a cut hash: %v, want ErrInvalid", err)
	}
	kv.Put(Bucket, "gw1", raw)

	// A record edited in the store to hold a malformed token is refused at load.
	g = Gateway{}
	json.Unmarshal(raw, &g)
	g.APITokens = map[string]APIToken{"at_x": {Name: "n", Role: RoleViewer, Hash: make([]byte, 32)}}
	if err := g.Validate(); err == nil || !strings.Contains(err.Error(), `"at_x"`) {
		t.Fatalf("a malformed token id: %v", err)
	}
}

func TestValidAPIToken(t *testing.T) {
	for s, want := range map[string]bool{
		APITokenPrefix + tok1:                  true,
		tok1:                                   false,
		APITokenPrefix + strings.ToUpper(tok1): false,
		APITokenPrefix + tok1[:63]:             false,
		"MGA_" + tok1:                          false,
		APITokenPrefix + tok1 + "0":            false,
		" " + APITokenPrefix + tok1:            false,
		APITokenPrefix + tok1[:62] + "\u00e9":  false,
		strings.Replace(APITokenPrefix, "_", "-", 1) + tok1: false,
	} {
		if ValidAPIToken(s) != want {
			t.Errorf("ValidAPIToken(%q) = %v, want %v", s, !want, want)
		}
	}
}
