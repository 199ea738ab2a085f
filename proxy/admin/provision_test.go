package admin_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/moltgate/moltgate/provisioner"
	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/registry"
)

// addrDriver is a driver of one step that only says where the gateway answers.
type addrDriver struct{}

func (addrDriver) Steps() []provisioner.Step { return []provisioner.Step{addrStep{}} }

type addrStep struct{}

func (addrStep) Name() string { return "test.addr" }
func (addrStep) Check(_ context.Context, r *provisioner.Run) (bool, error) {
	return r.Upstream() != "", nil
}
func (addrStep) Ensure(_ context.Context, r *provisioner.Run) error {
	r.SetUpstream("http://127.0.0.1:1")
	return nil
}
func (addrStep) Destroy(context.Context, *provisioner.Run) error { return nil }

// Issue 14: the provisioning endpoints, end to end on a real provisioner: who may call them,
// what they answer, what they record.
func TestProvisionEndpoints(t *testing.T) {
	var prov *provisioner.Provisioner
	var reg *registry.Registry
	f := newFixture(t, func(c *admin.Config, d *admin.Deps) {
		reg = d.Registry.(*registry.Registry)
		prov = withProvisioner(t, d, map[string]provisioner.Driver{"local": addrDriver{}})
		c.GatewayURL = func(id string) string { return "https://" + id + ".gw.example.test" }
	})
	ctx := t.Context()
	ops := f.client(adminToken)
	refused := func(err error, status int, reason string) {
		t.Helper()
		var ae *admin.APIError
		if !errors.As(err, &ae) || ae.Status != status || ae.Reason != reason {
			t.Errorf("got %v, want %d %s", err, status, reason)
		}
	}

	p, err := ops.Provision(ctx, "prov1", admin.ProvisionRequest{Tenant: "acme", Owner: "user_owner"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Spec.Driver != "local" || p.Phase != provisioner.PhasePending || p.URL != "https://prov1.gw.example.test" {
		t.Errorf("provision answer: %+v", p)
	}
	if _, err := ops.Provision(ctx, "prov1", admin.ProvisionRequest{Tenant: "acme", Owner: "user_owner"}); err != nil {
		t.Errorf("the same provision again: %v", err)
	}
	if err := prov.Reconcile(ctx, "prov1"); err != nil {
		t.Fatal(err)
	}
	if p, err = ops.ProvisionStatus(ctx, "prov1"); err != nil || p.Phase != provisioner.PhaseReady || len(p.Steps) != 3 {
		t.Fatalf("status after a pass: %+v %v", p, err)
	}
	if g, err := reg.Get("prov1"); err != nil || g.Owner != "user_owner" || g.Upstream != "http://127.0.0.1:1" {
		t.Fatalf("registry after a pass: %+v %v", g, err)
	}

	// Platform admins may; a gateway's owner may not, nor create one for itself.
	if _, err := f.user("user_platform").RotateToken(ctx, "prov1"); err != nil {
		t.Errorf("platform admin rotate: %v", err)
	}
	_, err = f.user("user_owner").RotateToken(ctx, "prov1")
	refused(err, http.StatusForbidden, "platform_admin_only")
	_, err = f.user("user_owner").ProvisionStatus(ctx, "prov1")
	refused(err, http.StatusForbidden, "platform_admin_only")
	_, err = f.user("user_owner").Provision(ctx, "mine", admin.ProvisionRequest{Tenant: "acme", Owner: "user_owner"})
	refused(err, http.StatusForbidden, "platform_admin_only")

	_, err = ops.Provision(ctx, "prov1", admin.ProvisionRequest{Tenant: "other", Owner: "user_owner"})
	refused(err, http.StatusConflict, "gateway_exists")
	if _, err := ops.Create(ctx, admin.CreateRequest{ID: "added", Tenant: "t2", Owner: "u", Upstream: "http://127.0.0.1:2"}); err != nil {
		t.Fatal(err)
	}
	_, err = ops.Provision(ctx, "added", admin.ProvisionRequest{Tenant: "t2", Owner: "u"})
	refused(err, http.StatusConflict, "gateway_exists")
	_, err = ops.Provision(ctx, "Bad_Id", admin.ProvisionRequest{Tenant: "acme", Owner: "u"})
	refused(err, http.StatusBadRequest, "invalid")
	_, err = ops.RotateToken(ctx, "nope")
	refused(err, http.StatusNotFound, "not_provisioned")

	if p, err = ops.Destroy(ctx, "prov1"); err != nil || p.Phase != provisioner.PhaseDestroying {
		t.Fatalf("destroy: %+v %v", p, err)
	}
	if err := prov.Reconcile(ctx, "prov1"); err != nil {
		t.Fatal(err)
	}
	_, err = ops.ProvisionStatus(ctx, "prov1")
	refused(err, http.StatusNotFound, "not_provisioned")
	if _, err := reg.Get("prov1"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("registry after destroy: %v", err)
	}

	// Every change is on record under the spec's tenant; so is the refused one.
	seen := map[string]int{}
	for _, e := range f.events(t) {
		if e.Gateway == "prov1" && e.Tenant == "acme" {
			seen[e.Type+" "+e.Action+" "+e.Outcome]++
		}
	}
	for _, want := range []string{"admin.change admin.provision.write success", "admin.change admin.provision.rotate success",
		"admin.change admin.provision.destroy success", "admin.deny admin.provision.rotate deny",
		"provision.step provision.ensure success", "provision.step provision.destroy success", "provision.step provision.forget success"} {
		if seen[want] == 0 {
			t.Errorf("no event %q; have %v", want, seen)
		}
	}
}
