package admin_test

import (
	"testing"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
)

// Tests of issue 15, part 4: the audit trail of the admin API.

// orgAdmin is a Clerk session of an admin of organization (tenant) org.
func (f *fixture) orgAdmin(sub, org string) *admin.Client {
	return f.client(f.clerk.Mint(clerktest.Claims{Subject: sub, Org: &clerktest.Org{ID: org, Slug: org, Role: "admin"}}))
}

// Refusals of calls about a gateway are filed under the gateway's tenant, so its admins see
// them: an authentication failure on /v1/gateways/{id} (whose answer does not tell whether
// the gateway exists), and a create of an existing id, whatever tenant its body names.
func TestAdminRefusalsFiledUnderTheGatewaysTenant(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	ops := f.client(adminToken)
	if _, err := ops.Create(ctx, admin.CreateRequest{ID: "gw1", Tenant: "tenant-a", Owner: "user_a", Upstream: "http://127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	var answers []string
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/gateways/gw1"},
		{"DELETE", "/v1/gateways/gw1"},
		{"PUT", "/v1/gateways/gw1/allowlist"},
		{"GET", "/v1/gateways/gw9"}, // none: answered alike
	} {
		status, body := send(t, f.srv.Client(), f.srv.URL+c.path, c.method, `{"cidrs":[]}`,
			"Authorization", "Bearer wrong-admin-token", "Content-Type", "application/json")
		if status != 401 {
			t.Fatalf("%s %s: got %d %s, want 401", c.method, c.path, status, body)
		}
		answers = append(answers, body)
	}
	if answers[0] != answers[3] {
		t.Fatalf("the answer tells an existing gateway from none: %q, %q", answers[0], answers[3])
	}
	_, err := ops.Create(ctx, admin.CreateRequest{ID: "gw1", Tenant: "tenant-b", Owner: "user_b", Upstream: "http://127.0.0.1:2"})
	wantAPIError(t, err, 409, "gateway_exists")

	page, err := f.orgAdmin("user_a_admin", "tenant-a").Audit(ctx, admin.AuditQuery{Tenant: "tenant-a"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, e := range page.Events {
		got[e.Type+" "+e.Details["method"]+" "+e.Gateway]++
	}
	for _, want := range []string{
		audit.TypeAdminChange + " POST gw1",
		audit.TypeAuthnFailure + " GET gw1",
		audit.TypeAuthnFailure + " DELETE gw1",
		audit.TypeAuthnFailure + " PUT gw1",
		audit.TypeAdminDeny + " POST gw1", // the conflicting create
	} {
		if got[want] != 1 {
			t.Errorf("tenant-a's admin sees %d events %q, want 1 (sees %v)", got[want], want, got)
		}
	}
	page, err = f.orgAdmin("user_b_admin", "tenant-b").Audit(ctx, admin.AuditQuery{Tenant: "tenant-b"})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range page.Events {
		if e.Gateway == "gw1" {
			t.Errorf("an event about tenant-a's gateway filed under tenant-b: %+v", e)
		}
	}
	for _, e := range f.events(t) {
		if e.Gateway == "gw9" && e.Tenant != "" {
			t.Errorf("an event about no gateway filed under %q", e.Tenant)
		}
	}
}
