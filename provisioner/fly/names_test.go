package fly_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner/fly"
	"github.com/moltgate/moltgate/provisioner/flytest"
)

// Issue 14: app names are global on Fly. A name another organization holds is a clear
// error, whichever way the API says so, and the driver never touches that app; a name our
// own organization holds is adopted.
func TestAppNameHeldElsewhere(t *testing.T) {
	t.Parallel()
	rows := []struct {
		name    string
		foreign int // Config.ForeignStatus of the fake
		setup   func(t *testing.T, f *flytest.Server)
		want    error
	}{
		{
			name: "another org's app, 401", foreign: 401,
			setup: func(t *testing.T, f *flytest.Server) { seed(t, f, "mg-acme-3", "rival") },
			want:  fly.ErrNameTaken,
		},
		{
			name: "another org's app, 403", foreign: 403,
			setup: func(t *testing.T, f *flytest.Server) { seed(t, f, "mg-acme-3", "rival") },
			want:  fly.ErrNameTaken,
		},
		{
			// Invisible at the lookup, taken at the create (422): the second lookup tells.
			name: "taken between lookup and create, by another org",
			setup: func(t *testing.T, f *flytest.Server) {
				seed(t, f, "mg-acme-3", "rival")
				f.Inject(flytest.RouteGetApp, flytest.Fault{Kind: flytest.Fail, Status: 404})
			},
			want: fly.ErrNameTaken,
		},
		{
			name: "create answers 403",
			setup: func(t *testing.T, f *flytest.Server) {
				f.Inject(flytest.RouteCreateApp, flytest.Fault{Kind: flytest.Taken, Status: 403})
			},
			want: fly.ErrNameTaken,
		},
		{
			name: "create answers 401",
			setup: func(t *testing.T, f *flytest.Server) {
				f.Inject(flytest.RouteCreateApp, flytest.Fault{Kind: flytest.Taken, Status: 401})
			},
			want: fly.ErrNameTaken,
		},
		{
			name: "create answers 422, nobody visible has it",
			setup: func(t *testing.T, f *flytest.Server) {
				f.Inject(flytest.RouteCreateApp, flytest.Fault{Kind: flytest.Taken})
			},
			want: fly.ErrNameTaken,
		},
		{
			// Another moltgate process created it between our lookup and our create.
			name: "taken between lookup and create, by our org",
			setup: func(t *testing.T, f *flytest.Server) {
				seed(t, f, "mg-acme-3", testOrg)
				f.Inject(flytest.RouteGetApp, flytest.Fault{Kind: flytest.Fail, Status: 404})
			},
			want: nil,
		},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, flytest.Config{ForeignStatus: r.foreign}, nil)
			r.setup(t, e.fake)
			app, err := e.d.EnsureApp(t.Context(), "acme-3")
			if r.want == nil {
				if err != nil || app.Name != "mg-acme-3" || app.Org != testOrg {
					t.Fatalf("got %+v, %v; want mg-acme-3 adopted in %s", app, err, testOrg)
				}
				if got := e.fake.Calls(flytest.RouteCreateApp); got != 1 {
					t.Fatalf("creates: got %d, want 1", got)
				}
				return
			}
			if !errors.Is(err, r.want) {
				t.Fatalf("got %v, want %v", err, r.want)
			}
			if !strings.Contains(err.Error(), `"mg-acme-3"`) {
				t.Fatalf("error %q does not name the app", err)
			}
			// Nothing is built on, or destroyed in, an app that is not ours.
			if _, err := e.d.EnsureVolume(t.Context(), "acme-3"); err == nil {
				t.Fatal("EnsureVolume in a foreign app: got success, want an error")
			}
			if err := e.d.Destroy(t.Context(), "acme-3"); err != nil && !errors.Is(err, fly.ErrNameTaken) {
				t.Fatalf("Destroy: got %v, want nil (nothing of ours) or ErrNameTaken", err)
			}
			if got := e.fake.Calls(flytest.RouteDeleteApp); got != 0 {
				t.Fatalf("app deletes: got %d, want 0", got)
			}
		})
	}
}

// A refused token is told apart from a name another organization holds.
func TestTokenRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, flytest.Config{}, func(c *fly.Config) { c.Token = keystore.Secret("fo1_wrong") })
	_, err := e.d.EnsureApp(t.Context(), "acme-4")
	if !errors.Is(err, fly.ErrUnauthorized) || errors.Is(err, fly.ErrNameTaken) {
		t.Fatalf("got %v, want ErrUnauthorized", err)
	}
}

func seed(t *testing.T, f *flytest.Server, name, org string) {
	t.Helper()
	if err := f.SeedApp(name, org); err != nil {
		t.Fatal(err)
	}
}

func TestAppName(t *testing.T) {
	t.Parallel()
	d, err := fly.New(fly.Config{Org: "o", Region: "ams", Token: keystore.Secret("t")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rows := []struct {
		id, want string
	}{
		{"acme", "mg-acme"},
		{"acme-prod-2", "mg-acme-prod-2"},
		{"7", "mg-7"},
		{strings.Repeat("a", 60), "mg-" + strings.Repeat("a", 60)},
		{strings.Repeat("a", 61), ""}, // 64 characters: not one DNS label
		{"", ""},
		{"Acme", ""}, // no case folding: two ids must never share an app
		{"acme_1", ""},
		{"-acme", ""},
		{"acme-", ""},
		{"acme.prod", ""},
		{"../acme", ""},
	}
	for _, r := range rows {
		got, err := d.AppName(r.id)
		if got != r.want || (r.want == "") != errors.Is(err, fly.ErrInvalidID) {
			t.Errorf("AppName(%q): got %q, %v; want %q", r.id, got, err, r.want)
		}
	}
}

// Issue 14: the machine runs an image pinned by digest; a tag is refused before any call.
func TestImageMustBePinned(t *testing.T) {
	t.Parallel()
	rows := []struct {
		image string
		ok    bool
	}{
		{imageA, true},
		{imageB, true},
		{"ghcr.io/moltgate/gateway:latest", false},
		{"ghcr.io/moltgate/gateway", false},
		{"ghcr.io/moltgate/gateway@sha256:1234", false},
		{"ghcr.io/moltgate/gateway@sha512:" + strings.Repeat("a", 128), false},
		{"ghcr.io/moltgate/gateway@sha256:" + strings.Repeat("A", 64), false},
		{"ghcr.io/moltgate/gateway:1.0@sha256:" + strings.Repeat("a", 64) + " ", false},
		{"", false},
	}
	for _, r := range rows {
		if err := fly.ValidateImage(r.image); (err == nil) != r.ok || (err != nil && !errors.Is(err, fly.ErrImageNotPinned)) {
			t.Errorf("ValidateImage(%q): got %v, want ok=%v", r.image, err, r.ok)
		}
	}
	e := newEnv(t, flytest.Config{}, nil)
	ctx := t.Context()
	if _, err := e.ensureAll(ctx, "acme-5", "ghcr.io/moltgate/gateway:latest"); !errors.Is(err, fly.ErrImageNotPinned) {
		t.Fatalf("EnsureMachine with a tag: got %v, want ErrImageNotPinned", err)
	}
	if _, err := e.d.UpgradeMachine(ctx, "acme-5", fly.MachineSpec{Image: "ghcr.io/moltgate/gateway:2"}); !errors.Is(err, fly.ErrImageNotPinned) {
		t.Fatalf("UpgradeMachine with a tag: got %v, want ErrImageNotPinned", err)
	}
	if got := e.fake.Calls(flytest.RouteLaunch) + e.fake.Calls(flytest.RouteListMachines); got != 0 {
		t.Fatalf("machine calls: got %d, want 0", got)
	}
}
