package proxy_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/proxy"
	"github.com/moltgate/moltgate/registry"
)

// decided sends c through the fixture's proxy and returns the response's status, decision id
// header and body fields.
func (f *fixture) decided(t *testing.T, c call) (int, string, map[string]string) {
	t.Helper()
	if c.method == "" {
		c.method = http.MethodGet
	}
	if c.host == "" {
		c.host = "gwa.gw.localhost"
	}
	req, err := http.NewRequestWithContext(t.Context(), c.method, f.srv.URL+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = c.host
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body map[string]string
	_ = json.Unmarshal(b, &body)
	if ids := resp.Header.Values(proxy.DecisionIDHeader); len(ids) > 1 {
		t.Fatalf("%s: %d values, want one", proxy.DecisionIDHeader, len(ids))
	}
	return resp.StatusCode, resp.Header.Get(proxy.DecisionIDHeader), body
}

// Issue 12: every proxied response and every refusal names its decision in
// X-Moltgate-Decision-Id, a refusal also in its body, and the refusal's audit event carries
// the same id (decision_id) and the policy revision.
func TestDecisionIDOnResponses(t *testing.T) {
	f := newFixture(t, registry.AuthToken)
	tests := []struct {
		name   string
		c      call
		status int
		typ    string // the audit event the refusal writes, "" for none
	}{
		{"allowed, proxied", call{path: "/", header: bearer(tokA)}, 200, ""},
		{"refused by policy", call{path: "/", header: bearer(f.user("user_stranger"))}, 403, audit.TypePolicyDeny},
		{"refused by role", call{method: "DELETE", path: "/x", header: bearer(f.user("user_viewer"))}, 403, audit.TypePolicyDeny},
		{"unauthenticated", call{path: "/"}, 401, audit.TypePolicyDeny},
		{"unknown token", call{path: "/", header: bearer(strings.Repeat("c", 64))}, 401, audit.TypeAuthnFailure},
		{"bad path, before the policy", call{path: "/tools%2finvoke", header: bearer(tokA)}, 400, audit.TypePolicyDeny},
		{"unknown gateway", call{host: "nosuch.gw.localhost", path: "/"}, 404, ""},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, before := f.lastEvent(t)
			status, id, body := f.decided(t, tt.c)
			if status != tt.status {
				t.Fatalf("status: got %d, want %d (%v)", status, tt.status, body)
			}
			if len(id) != 32 || seen[id] {
				t.Fatalf("%s: got %q, want a new 32-digit id", proxy.DecisionIDHeader, id)
			}
			seen[id] = true
			if status >= 400 && body["decision_id"] != id {
				t.Fatalf("body decision_id: got %q, want %q", body["decision_id"], id)
			}
			e, after := f.lastEvent(t)
			if tt.typ == "" {
				return
			}
			if after != before+1 || e.Type != tt.typ {
				t.Fatalf("audit: got %d new events, last %s; want one %s", after-before, e.Type, tt.typ)
			}
			if e.Decision == nil || e.Decision.DecisionID != id {
				t.Fatalf("audit event decision_id: got %+v, want %q", e.Decision, id)
			}
			if e.PolicyRevision != f.engine.Revision() {
				t.Errorf("policy_revision: got %q, want %q", e.PolicyRevision, f.engine.Revision())
			}
			if err := audit.CheckSchema(e); err != nil {
				t.Error(err)
			}
		})
	}
}
