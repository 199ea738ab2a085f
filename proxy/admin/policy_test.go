package admin_test

import (
	"net/http"
	"path/filepath"
	"testing"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
	"github.com/moltgate/moltgate/store"
)

// Issue 12: the policy revision endpoints are for platform admins and the admin token; a
// promote or rollback that cannot be made is refused with a reason and audited as its own
// type (policy.promote, policy.rollback).
func TestPolicyRevisionEndpoints(t *testing.T) {
	var engine *policies.Engine
	f := newFixture(t, func(_ *admin.Config, d *admin.Deps) {
		kv, err := store.OpenBolt(filepath.Join(t.TempDir(), "revisions.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { kv.Close() })
		engine = d.Policy.(*policies.Engine)
		d.Revisions = policies.NewRevisions(engine, kv)
	})
	orgAdmin := f.client(f.clerk.Mint(clerktest.Claims{Subject: "user_a", Org: &clerktest.Org{ID: "tenant-a", Role: "admin"}}))
	_, err := orgAdmin.PromotePolicy(t.Context(), "")
	wantAPIError(t, err, http.StatusForbidden, "platform_admin_only")
	_, err = f.user("user_owner").PolicyState(t.Context())
	wantAPIError(t, err, http.StatusForbidden, "platform_admin_only")

	st, err := f.user("user_platform").PolicyState(t.Context())
	if err != nil || st.Live != engine.Revision() || st.Promoted || st.Candidate != "" {
		t.Fatalf("state: got %+v (%v), want the configured revision %s, no candidate", st, err, engine.Revision())
	}
	_, err = f.user("user_platform").PromotePolicy(t.Context(), "")
	wantAPIError(t, err, http.StatusConflict, "no_candidate")
	_, err = f.client(adminToken).RollbackPolicy(t.Context())
	wantAPIError(t, err, http.StatusConflict, "no_earlier_revision")

	got := map[string]string{}
	for _, e := range f.events(t) {
		if e.Type != audit.TypeAdminRequest && (e.Action == "admin.policy.promote" || e.Action == "admin.policy.rollback") {
			got[e.Actor.Kind+":"+e.Actor.ID+" "+e.Action] = e.Type + " " + e.Outcome + " " + e.Reason
		}
	}
	want := map[string]string{
		"user:user_a admin.policy.promote":              audit.TypeAdminDeny + " deny platform_admin_only",
		"user:user_platform admin.policy.promote":       audit.TypePolicyPromote + " deny no_candidate",
		"admin_token:admin-token admin.policy.rollback": audit.TypePolicyRollback + " deny no_earlier_revision",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("event of %q: got %q, want %q", k, got[k], v)
		}
	}
}
