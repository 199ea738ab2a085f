package proxy_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/registry"
)

// apiToken makes an API token of gateway for the fixture's tests.
func (f *fixture) apiToken(t *testing.T, gateway, role string, ttl time.Duration) (token, id string) {
	t.Helper()
	token, id, _, err := f.reg.CreateAPIToken(t.Context(), gateway, registry.NewAPIToken{Name: "test " + role, Role: role, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return token, id
}

// An API token is a machine client that acts with its role on its own gateway: what the
// role lists is forwarded with the gateway's own credential, the rest refused and audited
// under the token's id; another gateway's, an unknown, an expired or a revoked token is
// refused.
func TestAPITokensOverHTTP(t *testing.T) {
	f := newFixture(t, registry.AuthToken)
	viewer, viewerID := f.apiToken(t, "gwa", registry.RoleViewer, time.Hour)
	operator, _ := f.apiToken(t, "gwa", registry.RoleOperator, 0)
	foreign, _ := f.apiToken(t, "gwb", registry.RoleAdmin, 0)
	invoke := func(tool string) string { return `{"tool":"` + tool + `","args":{}}` }

	tests := []struct {
		name   string
		c      call
		status int
		reason string
	}{
		{"viewer reads", call{path: "/health", header: bearer(viewer)}, 200, ""},
		{"viewer writes", call{method: "POST", path: "/api/x", header: bearer(viewer)}, 403, "role_forbids"},
		{"viewer invokes", call{method: "POST", path: "/tools/invoke", body: invoke("web_search"), header: bearer(viewer)}, 403, "role_forbids"},
		{"operator invokes", call{method: "POST", path: "/tools/invoke", body: invoke("web_search"), header: bearer(operator)}, 200, ""},
		{"operator, an owner-only tool", call{method: "POST", path: "/tools/invoke", body: invoke("sessions"), header: bearer(operator)}, 403, "role_forbids"},
		{"operator, an owner route", call{method: "POST", path: "/api/v1/admin/rpc", header: bearer(operator)}, 403, "owner_only"},
		{"another gateway's token", call{path: "/health", header: bearer(foreign)}, 403, "wrong_gateway"},
		{"unknown token", call{path: "/health", header: bearer(registry.APITokenPrefix + strings.Repeat("c", 64))}, 401, "unknown_token"},
		{"malformed token", call{path: "/health", header: bearer(registry.APITokenPrefix + strings.Repeat("C", 64))}, 401, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.up.count()
			status, body := f.do(t, tt.c)
			if status != tt.status || body["reason"] != tt.reason {
				t.Fatalf("got %d %v, want %d %q", status, body, tt.status, tt.reason)
			}
			if forwarded := f.up.count() > before; forwarded != (status == 200) {
				t.Fatalf("forwarded: %v with status %d", forwarded, status)
			}
			if status == 200 {
				r, _ := f.up.last(t)
				if got := r.Header.Get("Authorization"); got != "Bearer "+tokA {
					t.Fatalf("upstream credential %q, want the gateway's own token", got)
				}
			}
		})
	}
	// A refusal is on record under the token's id, never the token.
	f.do(t, call{method: "POST", path: "/api/x", header: bearer(viewer)})
	e, _ := f.lastEvent(t)
	if e.Type != audit.TypePolicyDeny || e.Actor.Kind != "api_token" || e.Actor.ID != viewerID || e.Reason != "role_forbids" {
		t.Fatalf("event %+v, want policy.deny by api_token %s", e, viewerID)
	}
	for _, e := range f.events(t) {
		if raw, _ := json.Marshal(e); strings.Contains(string(raw), viewer[len(registry.APITokenPrefix):]) {
			t.Fatalf("an event holds the token: %s", raw)
		}
	}

	// Past its expiry (the handler's clock), and once revoked.
	f.clock.Advance(2 * time.Hour)
	if status, body := f.do(t, call{path: "/health", header: bearer(viewer)}); status != 401 || body["reason"] != "expired" {
		t.Fatalf("expired token: %d %v", status, body)
	}
	if status, _ := f.do(t, call{path: "/health", header: bearer(operator)}); status != 200 {
		t.Fatalf("a token without expiry: %d", status)
	}
	if _, err := f.reg.RevokeAPIToken(t.Context(), "gwa", viewerID); err != nil {
		t.Fatal(err)
	}
	if status, body := f.do(t, call{path: "/health", header: bearer(viewer)}); status != 401 || body["reason"] != "unknown_token" {
		t.Fatalf("revoked token: %d %v", status, body)
	}
}

// In trusted-proxy mode the gateway learns the token's id as the user, with its role's
// scopes.
func TestAPITokenTrustedProxyIdentity(t *testing.T) {
	f := newFixture(t, registry.AuthTrustedProxy)
	tok, id := f.apiToken(t, "gwa", registry.RoleViewer, 0)
	if status, _ := f.do(t, call{path: "/", header: bearer(tok)}); status != 200 {
		t.Fatalf("status %d", status)
	}
	r, _ := f.up.last(t)
	if r.Header.Get("X-Forwarded-User") != id || r.Header.Get("X-Openclaw-Scopes") != "operator.read" || r.Header.Get("Authorization") != "" {
		t.Fatalf("upstream identity: user %q scopes %q authorization %q", r.Header.Get("X-Forwarded-User"),
			r.Header.Get("X-Openclaw-Scopes"), r.Header.Get("Authorization"))
	}
}

// A socket opened with an API token is decided message by message with the token's role,
// and closed at once when the token is revoked.
func TestWSAPITokenRoleAndRevocation(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	tok, id := f.apiToken(t, "gwa", registry.RoleViewer, 0)
	c := f.connected(t, tok)
	if res := c.call("sessions.list", nil); res["ok"] != true {
		t.Fatalf("a viewer's read: %v", res)
	}
	if res := c.call("chat.send", map[string]any{"text": "hi"}); res["ok"] != false {
		t.Fatalf("a viewer's chat.send: %v", res)
	}
	start := time.Now()
	if _, err := f.reg.RevokeAPIToken(t.Context(), "gwa", id); err != nil {
		t.Fatal(err)
	}
	code, reason := c.closed()
	if code != websocket.StatusPolicyViolation || !strings.Contains(reason, "unknown_token") || time.Since(start) > 2*time.Second {
		t.Fatalf("revoked: got %d %q after %v", code, reason, time.Since(start))
	}
}

// A socket opened with a token that expires ends at its expiry. (An API token has no
// leeway, unlike a session token: the lifetime leaves a loaded machine time to connect.)
func TestWSAPITokenExpiry(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	tok, _ := f.apiToken(t, "gwa", registry.RoleViewer, 3*time.Second)
	c := f.connected(t, tok)
	if code, reason := c.closed(); code != websocket.StatusPolicyViolation || !strings.Contains(reason, "expired") {
		t.Fatalf("expiry: got %d %q", code, reason)
	}
}
