package fly_test

import (
	"errors"
	"testing"
	"time"

	flyapi "github.com/superfly/fly-go"

	"github.com/moltgate/moltgate/provisioner/fly"
	"github.com/moltgate/moltgate/provisioner/flytest"
)

// Issue 14: Upgrade waits for the health checks. A machine that starts on the new image
// but fails its checks is an ErrMachineFailed upgrade that names the image to roll back
// to; rolling back keeps the secrets version the machine had.
func TestUpgradeWaitsForChecks(t *testing.T) {
	t.Parallel()
	checks := map[string]flyapi.MachineCheck{"readyz": {Type: flyapi.Pointer("http"), Port: flyapi.Pointer(18789), HTTPPath: flyapi.Pointer("/readyz")}}
	e := newEnv(t, flytest.Config{}, func(c *fly.Config) {
		c.Checks = checks
		c.StartTimeout = 2 * time.Second
	})
	ctx := t.Context()
	first, err := e.ensureAll(ctx, "acme-20", imageA)
	if err != nil {
		t.Fatal(err)
	}
	prev, err := e.d.Upgrade(ctx, "acme-20", imageB)
	if err != nil || prev != imageA {
		t.Fatalf("upgrade: got %q, %v; want previous %s", prev, err, imageA)
	}
	e.fake.FailChecks(imageC, "mg-acme-20")
	prev, err = e.d.Upgrade(ctx, "acme-20", imageC)
	if !errors.Is(err, fly.ErrMachineFailed) || prev != imageB {
		t.Fatalf("upgrade to an image failing its checks: got %q, %v; want ErrMachineFailed and %s", prev, err, imageB)
	}
	if _, err := e.d.Upgrade(ctx, "acme-20", prev); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	m, err := e.d.Machine(ctx, "acme-20")
	if err != nil || m.Image != imageB || m.SecretsVersion != first.SecretsVersion {
		t.Fatalf("after rollback: got %+v, %v; want %s at secrets version %d", m, err, imageB, first.SecretsVersion)
	}
	if _, err := e.d.Upgrade(ctx, "acme-20", "registry.example.test/moltgate/gateway:latest"); !errors.Is(err, fly.ErrImageNotPinned) {
		t.Fatalf("unpinned image: got %v, want ErrImageNotPinned", err)
	}
	if got := e.fake.Calls(flytest.RouteUpdateMachine); got != 3 {
		t.Fatalf("updates: got %d, want 3 (up, bad, back; nothing for the unpinned image)", got)
	}
}
