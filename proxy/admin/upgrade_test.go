package admin_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner"
	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/registry"
	"github.com/moltgate/moltgate/store"
)

// imageDriver is addrDriver with images: its gateways run what Upgrade was last given, and
// an image named in bad never becomes healthy.
type imageDriver struct {
	addrDriver
	mu      sync.Mutex
	running map[string]string
	bad     string
}

func (d *imageDriver) Upgrade(_ context.Context, id, image string) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	prev := d.running[id]
	d.running[id] = image
	if image == d.bad {
		return prev, fmt.Errorf("%w: checks critical", provisioner.ErrUnhealthy)
	}
	return prev, nil
}

const (
	imgA = "registry.example.test/gw@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	imgB = "registry.example.test/gw@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	imgC = "registry.example.test/gw@sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
)

// withProvisioner gives deps a real provisioner with drivers, on a store of its own.
func withProvisioner(t *testing.T, deps *admin.Deps, drivers map[string]provisioner.Driver) *provisioner.Provisioner {
	t.Helper()
	kv, err := store.OpenBolt(filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })
	ring, _ := keystore.NewKeyring(1, bytes.Repeat([]byte{2}, 32))
	prov, err := provisioner.New(provisioner.Config{Drivers: drivers},
		provisioner.Deps{KV: kv, Sealer: keystore.New(ring), Registry: deps.Registry.(*registry.Registry), Audit: deps.Audit,
			Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	deps.Provisioner = prov
	return prov
}

// Issue 14: `gateway upgrade` through the admin API, one gateway or the fleet, decided as
// admin.provision.upgrade: platform admins and the admin token only; bad input is a 400
// that changes nothing; a failed health check a 502.
func TestUpgradeEndpoints(t *testing.T) {
	var prov *provisioner.Provisioner
	d := &imageDriver{running: map[string]string{}, bad: imgC}
	f := newFixture(t, func(c *admin.Config, deps *admin.Deps) {
		prov = withProvisioner(t, deps, map[string]provisioner.Driver{"local": addrDriver{}, "fly": d})
	})
	ctx := t.Context()
	ops := f.client(adminToken)
	refused := func(err error, status int, reason, say string) {
		t.Helper()
		var ae *admin.APIError
		if !errors.As(err, &ae) || ae.Status != status || ae.Reason != reason || !strings.Contains(ae.Error(), say) {
			t.Errorf("got %v, want %d %s saying %q", err, status, reason, say)
		}
	}
	for _, id := range []string{"up1", "up2"} {
		if _, err := ops.Provision(ctx, id, admin.ProvisionRequest{Tenant: "acme", Owner: "user_owner", Driver: "fly", Image: imgA}); err != nil {
			t.Fatal(err)
		}
		if err := prov.Reconcile(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ops.Provision(ctx, "loc1", admin.ProvisionRequest{Tenant: "acme", Owner: "user_owner"}); err != nil {
		t.Fatal(err)
	}

	_, err := f.user("user_owner").Upgrade(ctx, "up1", imgB)
	refused(err, http.StatusForbidden, "platform_admin_only", "")
	_, err = f.user("user_owner").UpgradeFleet(ctx, provisioner.FleetSpec{Image: imgB})
	refused(err, http.StatusForbidden, "platform_admin_only", "")
	_, err = ops.Upgrade(ctx, "up1", "registry.example.test/gw:latest")
	refused(err, http.StatusBadRequest, "invalid", "not pinned by digest")
	_, err = ops.Upgrade(ctx, "loc1", imgB)
	refused(err, http.StatusBadRequest, "invalid", "upgrade applies to fly")
	_, err = ops.Upgrade(ctx, "nope", imgB)
	refused(err, http.StatusNotFound, "not_provisioned", "")
	_, err = ops.UpgradeFleet(ctx, provisioner.FleetSpec{Image: imgB, Canary: -1})
	refused(err, http.StatusBadRequest, "invalid", "negative")
	if len(d.running) != 0 {
		t.Fatalf("refused calls upgraded: %v", d.running)
	}

	p, err := ops.Upgrade(ctx, "up1", imgB)
	if err != nil || p.Image != imgB || p.Upgrade == nil || p.Upgrade.Previous != imgA {
		t.Fatalf("upgrade: got %+v, %v; want %s from %s", p.Upgrade, err, imgB, imgA)
	}
	_, err = ops.Upgrade(ctx, "up2", imgC)
	refused(err, http.StatusBadGateway, "upgrade_failed", "checks critical")

	fl, err := ops.UpgradeFleet(ctx, provisioner.FleetSpec{Image: imgB})
	if err != nil || fl.State != provisioner.FleetDone || len(fl.Batches) != 1 || fl.Batches[0][0] != "up2" {
		t.Fatalf("fleet: got %+v, %v; want done, up2 alone upgraded", fl, err)
	}
	v, err := ops.Fleet(ctx)
	if err != nil || v.Fleet == nil || v.Fleet.State != provisioner.FleetDone || len(v.Gateways) != 3 {
		t.Fatalf("fleet view: got %+v, %v", v, err)
	}
	for _, g := range v.Gateways {
		want := "sha256:" + strings.Repeat("b", 64)
		if g.Driver == "local" {
			want = ""
		}
		if g.Digest != want {
			t.Errorf("%s: digest %q, want %q", g.ID, g.Digest, want)
		}
	}
}
