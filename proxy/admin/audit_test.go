package admin_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
)

// Issue 5: tenants read only their own audit events through the admin API, as the policy
// decides; every read is audited, every refusal too.
func TestAuditReadIsTenantScoped(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	ops := f.client(adminToken)
	for _, g := range []admin.CreateRequest{
		{ID: "gwa", Tenant: "tenant-a", Owner: "user_a", Upstream: "http://127.0.0.1:1"},
		{ID: "gwb", Tenant: "tenant-b", Owner: "user_b", Upstream: "http://127.0.0.1:2"},
	} {
		if _, err := ops.Create(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	// A denial in each tenant.
	for _, gw := range []string{"gwa", "gwb"} {
		_, err := f.user("user_stranger").Get(ctx, gw)
		wantAPIError(t, err, 403, "not_a_member")
	}
	orgUser := func(sub, org, role string) *admin.Client {
		return f.client(f.clerk.Mint(clerktest.Claims{Subject: sub, Org: &clerktest.Org{ID: org, Slug: org, Role: role}}))
	}
	adminA := orgUser("user_a_admin", "tenant-a", "admin")

	page, err := adminA.Audit(ctx, admin.AuditQuery{Tenant: "tenant-a"})
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]int{}
	for _, e := range page.Events {
		if e.Tenant != "tenant-a" {
			t.Fatalf("tenant-a's admin was shown an event of %q: %+v", e.Tenant, e)
		}
		types[e.Type]++
	}
	if types[audit.TypeAdminChange] != 1 || types[audit.TypeAdminDeny] != 1 || page.Truncated {
		t.Fatalf("tenant-a's events: %v (truncated %v), want its creation and its denial", types, page.Truncated)
	}

	// Another tenant, every tenant, a plain member, a gateway owner without the org role: refused.
	for name, c := range map[string]struct {
		client *admin.Client
		tenant string
		status int
		reason string
	}{
		"other tenant":  {adminA, "tenant-b", 403, "tenant_admin_only"},
		"every tenant":  {adminA, "", 403, "tenant_admin_only"},
		"org member":    {orgUser("user_m", "tenant-a", "basic_member"), "tenant-a", 403, "tenant_admin_only"},
		"gateway owner": {f.user("user_a"), "tenant-a", 403, "tenant_admin_only"},
		"anonymous":     {f.client(""), "tenant-a", 401, "unauthenticated"},
	} {
		_, err := c.client.Audit(ctx, admin.AuditQuery{Tenant: c.tenant})
		t.Run(name, func(t *testing.T) { wantAPIError(t, err, c.status, c.reason) })
	}

	// The operator reads every tenant, filtered and bounded.
	all, err := ops.Audit(ctx, admin.AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	tenants := map[string]bool{}
	for _, e := range all.Events {
		tenants[e.Tenant] = true
	}
	if !tenants["tenant-a"] || !tenants["tenant-b"] {
		t.Fatalf("operator saw tenants %v, want both", tenants)
	}
	denials, err := ops.Audit(ctx, admin.AuditQuery{Type: audit.TypeAdminDeny, Gateway: "gwb", Limit: 1})
	if err != nil || len(denials.Events) != 1 || denials.Events[0].Gateway != "gwb" || denials.Events[0].Type != audit.TypeAdminDeny {
		t.Fatalf("filtered read: %+v %v", denials, err)
	}
	future, err := ops.Audit(ctx, admin.AuditQuery{Since: time.Now().Add(time.Hour)})
	if err != nil || len(future.Events) != 0 {
		t.Fatalf("read since an hour ahead: %+v %v", future, err)
	}

	// Bad input: a clear 400, nothing read.
	for _, raw := range []string{"since=yesterday", "limit=0", "limit=1001", "limit=x", "tenant=a&tenant=b", "tenant=" + strings.Repeat("t", 201), "colour=red"} {
		req, _ := http.NewRequestWithContext(ctx, "GET", f.srv.URL+"/v1/audit?"+raw, nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Fatalf("GET /v1/audit?%s: %d, want 400", raw, resp.StatusCode)
		}
	}

	// Every successful read is an audit.read event naming its reader and tenant; the reads
	// refused above are admin.deny or authn.failure events.
	var reads, refusedReads int
	for _, e := range f.events(t) {
		if e.Action != "admin.audit.read" {
			continue
		}
		switch {
		case e.Type == audit.TypeAuditRead && e.Outcome == "success":
			reads++
			if reads == 1 && (e.Tenant != "tenant-a" || e.Actor.ID != "user_a_admin") {
				t.Fatalf("first audit.read event: %+v", e)
			}
		case e.Outcome == "deny":
			refusedReads++
		}
	}
	if reads != 4 || refusedReads != 5+7 {
		t.Fatalf("%d audit.read and %d refused read events, want 4 and 12", reads, refusedReads)
	}
}

// Reading the audit trail is itself audited: when that event cannot be written, no page is
// served (503 audit_unavailable), and bad input is not answered as if refused on record.
func TestAuditReadUnrecordedIsRefused(t *testing.T) {
	f := newFixture(t)
	ops := f.client(adminToken)
	if _, err := ops.Audit(t.Context(), admin.AuditQuery{}); err != nil {
		t.Fatal(err)
	}
	f.audit.Close()
	_, err := ops.Audit(t.Context(), admin.AuditQuery{})
	wantAPIError(t, err, 503, "audit_unavailable")
	req, _ := http.NewRequestWithContext(t.Context(), "GET", f.srv.URL+"/v1/audit?limit=0", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("bad input with audit closed: %d, want 503", resp.StatusCode)
	}
}
