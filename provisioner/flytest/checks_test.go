package flytest_test

import (
	"testing"

	fly "github.com/superfly/fly-go"
	"github.com/superfly/fly-go/flaps"

	"github.com/moltgate/moltgate/provisioner/flytest"
)

// Issue 14: FailChecks fails the health checks of a machine running an image, in the apps
// named: it is started, its checks critical with a refused connection's output; another
// image, or another app, passes.
func TestFailChecks(t *testing.T) {
	t.Parallel()
	s, c := start(t, flytest.Config{})
	ctx := t.Context()
	checks := map[string]fly.MachineCheck{"http": {Type: fly.Pointer("http")}}
	launch := func(app, image string) *fly.Machine {
		must[*flaps.App](t)(c.CreateApp(ctx, flaps.CreateAppRequest{Name: app, Org: "moltgate"}))
		return must[*fly.Machine](t)(c.Launch(ctx, app, fly.LaunchMachineInput{Config: &fly.MachineConfig{Image: image, Checks: checks}}))
	}
	bad, good := launch("mg-c1", "img@sha256:bad"), launch("mg-c2", "img@sha256:bad")
	other := launch("mg-c3", "img@sha256:good")
	s.FailChecks("img@sha256:bad", "mg-c1")

	rows := []struct {
		app    string
		id     string
		status fly.ConsulCheckStatus
	}{
		{"mg-c1", bad.ID, fly.Critical},
		{"mg-c2", good.ID, fly.Passing},
		{"mg-c3", other.ID, fly.Passing},
	}
	for _, r := range rows {
		if err := c.Wait(ctx, r.app, r.id); err != nil {
			t.Fatal(err)
		}
		m := must[*fly.Machine](t)(c.Get(ctx, r.app, r.id))
		if m.State != "started" || len(m.Checks) != 1 || m.Checks[0].Name != "http" || m.Checks[0].Status != r.status {
			t.Fatalf("%s: got state %s, checks %+v; want started, http %s", r.app, m.State, m.Checks, r.status)
		}
		if r.status == fly.Critical && m.Checks[0].Output == "" {
			t.Fatalf("%s: a failing check without output", r.app)
		}
	}

	// Without apps, every machine on the image fails its checks.
	s.FailChecks("img@sha256:good")
	m := must[*fly.Machine](t)(c.Get(ctx, "mg-c3", other.ID))
	if m.Checks[0].Status != fly.Critical {
		t.Fatalf("mg-c3 after FailChecks on every app: got %s, want critical", m.Checks[0].Status)
	}
}
