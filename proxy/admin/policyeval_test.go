package admin_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
)

// withEvaluator serves POST /v1/policy/eval from the fixture's own engine.
func withEvaluator(_ *admin.Config, d *admin.Deps) { d.Evaluator = d.Policy.(admin.Evaluator) }

// Issue 12: POST /v1/policy/eval answers the live policy's decision on an input, with OPA's
// explanation on request, to platform admins and the admin token only; a malformed body
// or input is 400 with what is wrong, and every call is on record.
func TestPolicyEval(t *testing.T) {
	f := newFixture(t, withEvaluator)
	ctx := t.Context()
	if _, err := f.client(adminToken).Create(ctx, admin.CreateRequest{ID: "gw1", Tenant: "tenant-a", Owner: "user_a", Upstream: "http://127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	read := func(subject string) policies.Input {
		return policies.Input{Subject: policies.Subject{Kind: policies.SubjectUser, ID: subject}, Gateway: policies.GatewayRef{ID: "gw1"},
			Request: policies.Request{Method: "GET", Path: "/", Host: "gw1.gw.localhost"}, Protocol: policies.ProtocolHTTP, Action: "http.read"}
	}
	for _, c := range []*admin.Client{f.client(adminToken), f.user("user_platform")} {
		ev, err := c.PolicyEval(ctx, admin.EvalRequest{Input: read("user_a")})
		if err != nil || !ev.Allow || ev.Reason != "owner" || len(ev.ID) != 32 || ev.Revision == "" || ev.Explanation != nil {
			t.Fatalf("owner's read: got %+v, %v; want allowed as owner, with id and revision", ev, err)
		}
		ev, err = c.PolicyEval(ctx, admin.EvalRequest{Input: read("user_b"), Explain: "fails"})
		if err != nil || ev.Allow || ev.Reason != "not_a_member" || !strings.Contains(strings.Join(ev.Explanation, "\n"), "Fail ") {
			t.Fatalf("stranger's read: got %+v, %v; want not_a_member with the failed expressions", ev, err)
		}
	}
	// The owner of the very gateway asked about may not: the answer shows any gateway's view.
	// The refusal names its decision, as its admin.deny event does.
	status, body := send(t, f.srv.Client(), f.srv.URL+"/v1/policy/eval", "POST", `{"input":{"protocol":"http","action":"http.read","subject":{"kind":"user"}}}`,
		"Authorization", "Bearer "+f.clerk.Mint(clerktest.Claims{Subject: "user_a"}), "Content-Type", "application/json")
	var refusal struct {
		Reason     string `json:"reason"`
		DecisionID string `json:"decision_id"`
	}
	if err := json.Unmarshal([]byte(body), &refusal); err != nil || status != 403 || refusal.Reason != "platform_admin_only" || len(refusal.DecisionID) != 32 {
		t.Fatalf("the owner: got %d %s, want 403 platform_admin_only naming its decision", status, body)
	}
	if evs := f.events(t); evs[len(evs)-1].Decision == nil || evs[len(evs)-1].Decision.DecisionID != refusal.DecisionID {
		t.Fatalf("the refusal's event: %+v, want decision_id %s", evs[len(evs)-1], refusal.DecisionID)
	}
	_, err := f.client("").PolicyEval(ctx, admin.EvalRequest{Input: read("user_a")})
	wantAPIError(t, err, 401, "")

	for _, tt := range []struct{ name, body, msg string }{
		{"not JSON", `{"input":`, "one JSON object"},
		{"unknown field", `{"input":{"protocol":"http","action":"http.read","subject":{"kind":"user"},"headers":{}}}`, "one JSON object"},
		{"bad input", `{"input":{"protocol":"smtp","subject":{"kind":"robot"}}}`, "want http, ws or admin"},
		{"bad explain", `{"input":{"protocol":"http","action":"http.read","subject":{"kind":"user"}},"explain":"all"}`, "want one of off, notes, fails, full"},
		{"too large", `{"input":{"protocol":"http","action":"` + strings.Repeat("a", 70<<10) + `","subject":{"kind":"user"}}}`, "64 KiB"},
	} {
		status, body := send(t, f.srv.Client(), f.srv.URL+"/v1/policy/eval", "POST", tt.body,
			"Authorization", "Bearer "+adminToken, "Content-Type", "application/json")
		if status != 400 || !strings.Contains(body, tt.msg) || !strings.Contains(body, `"reason":"invalid"`) {
			t.Errorf("%s: got %d %s, want 400 invalid naming %q", tt.name, status, body, tt.msg)
		}
	}
	got := map[string]int{}
	for _, e := range f.events(t) {
		if e.Action == "admin.policy.eval" {
			got[e.Type+" "+e.Reason]++
		}
	}
	// Each allowed call is on record before its body is read: 4 answered, 5 malformed.
	if got["admin.request "] != 9 || got["admin.deny platform_admin_only"] != 1 || got["admin.deny invalid"] != 5 ||
		got["authn.failure unauthenticated"] != 1 {
		t.Errorf("audit trail of admin.policy.eval: got %v", got)
	}
}
