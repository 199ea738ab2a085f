package admin_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/registry"
)

// API tokens are made and revoked by whoever may change the gateway's members, shown to
// whoever may read it, and their value appears once: in the answer that makes one.
func TestAdminAPITokens(t *testing.T) {
	f := newFixture(t)
	ops := f.client(adminToken)
	ctx := t.Context()
	for _, req := range []admin.CreateRequest{
		{ID: "gw1", Tenant: "tenant-a", Owner: "user_owner", Upstream: "http://127.0.0.1:1"},
		{ID: "gw2", Tenant: "tenant-b", Owner: "user_other", Upstream: "http://127.0.0.1:2"},
	} {
		if _, err := ops.Create(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	owner := f.user("user_owner")
	if _, err := owner.SetMember(ctx, "gw1", "user_viewer", "viewer"); err != nil {
		t.Fatal(err)
	}

	made, err := owner.CreateAPIToken(ctx, "gw1", admin.APITokenRequest{Name: "nightly backup", Role: "operator", TTL: "720h"})
	if err != nil {
		t.Fatal(err)
	}
	tok := made.APIToken
	if !registry.ValidAPIToken(made.Token) || !registry.ValidAPITokenID(tok.ID) || tok.Role != "operator" || tok.Name != "nightly backup" ||
		tok.Expires == nil || tok.Expires.Sub(tok.Created).Hours() != 720 || tok.CreatedBy != "user:user_owner" {
		t.Fatalf("made: %+v", made)
	}
	forever, err := ops.CreateAPIToken(ctx, "gw1", admin.APITokenRequest{Name: "monitor", Role: "viewer"})
	if err != nil || forever.APIToken.Expires != nil {
		t.Fatalf("a token without ttl: %+v %v", forever, err)
	}

	// Readers see the tokens, never their value or hash.
	g, err := f.user("user_viewer").Get(ctx, "gw1")
	if err != nil || len(g.APITokens) != 2 {
		t.Fatalf("viewer's view: %+v %v", g, err)
	}
	raw, _ := json.Marshal(g)
	for _, secret := range []string{made.Token[len(registry.APITokenPrefix):], forever.Token[len(registry.APITokenPrefix):], "hash"} {
		if strings.Contains(string(raw), secret) {
			t.Fatalf("the gateway's view holds %q: %s", secret, raw)
		}
	}

	// Refused: a viewer, another tenant, a bad body; nothing is made.
	_, err = f.user("user_viewer").CreateAPIToken(ctx, "gw1", admin.APITokenRequest{Name: "x", Role: "admin"})
	wantAPIError(t, err, 403, "role_forbids")
	_, err = owner.CreateAPIToken(ctx, "gw2", admin.APITokenRequest{Name: "x", Role: "viewer"})
	wantAPIError(t, err, 403, "not_a_member")
	for _, bad := range []admin.APITokenRequest{
		{Name: "x", Role: "owner"},
		{Name: "", Role: "viewer"},
		{Name: "x", Role: "viewer", TTL: "forever"},
		{Name: "x", Role: "viewer", TTL: "-1h"},
		{Name: strings.Repeat("x", 65), Role: "viewer"},
	} {
		_, err = owner.CreateAPIToken(ctx, "gw1", bad)
		wantAPIError(t, err, 400, "invalid")
	}
	if g, _ := ops.Get(ctx, "gw1"); len(g.APITokens) != 2 {
		t.Fatalf("refused calls made tokens: %+v", g.APITokens)
	}

	// Revoked by id; a token revoked twice, or another gateway's, is unknown.
	if g, err := owner.RevokeAPIToken(ctx, "gw1", tok.ID); err != nil || len(g.APITokens) != 1 {
		t.Fatalf("revoke: %+v %v", g, err)
	}
	_, err = owner.RevokeAPIToken(ctx, "gw1", tok.ID)
	wantAPIError(t, err, 404, "unknown_api_token")
	_, err = f.user("user_viewer").RevokeAPIToken(ctx, "gw1", forever.APIToken.ID)
	wantAPIError(t, err, 403, "role_forbids")

	// Every change is on record with the token's id and never its value.
	var created, revoked int
	for _, e := range f.events(t) {
		raw, _ := json.Marshal(e)
		if strings.Contains(string(raw), made.Token[len(registry.APITokenPrefix):]) {
			t.Fatalf("an event holds the token: %s", raw)
		}
		if e.Type != audit.TypeAdminChange || e.Outcome != "success" || e.Details["api_token"] == "" {
			continue
		}
		switch e.Details["method"] {
		case "POST":
			created++
		case "DELETE":
			revoked++
		}
	}
	if created != 2 || revoked != 1 {
		t.Fatalf("recorded %d creations and %d revocations, want 2 and 1", created, revoked)
	}
}
