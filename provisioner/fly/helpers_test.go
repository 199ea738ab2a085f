package fly_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	flyapi "github.com/superfly/fly-go"
	"github.com/superfly/fly-go/flaps"
	"github.com/superfly/fly-go/tokens"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner/fly"
	"github.com/moltgate/moltgate/provisioner/flytest"
)

const (
	testOrg   = "moltgate"
	testToken = "fo1_test-token-9d2c"
	imageA    = "registry.example.test/moltgate/gateway:2026.9.6@sha256:1111111111111111111111111111111111111111111111111111111111111111"
	imageB    = "registry.example.test/moltgate/gateway@sha256:2222222222222222222222222222222222222222222222222222222222222222"
	imageC    = "registry.example.test/moltgate/gateway@sha256:3333333333333333333333333333333333333333333333333333333333333333"
)

// Distinctive secret values: every log line and error string of the tests is scanned for
// them.
var (
	gatewayToken = "gwtok-5f1e0c9a7b3d4e2f8a6b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f"
	providerKey  = "sk-ant-LEAKCHECK-3b9f2a7c1d"
	secretValues = []string{gatewayToken, providerKey, testToken}
)

func tenantSecrets() map[string]keystore.Secret {
	return map[string]keystore.Secret{
		fly.SecretGatewayToken: keystore.Secret(gatewayToken),
		"ANTHROPIC_API_KEY":    keystore.Secret(providerKey),
	}
}

// env is a fake Machines API and a driver pointed at it.
type env struct {
	fake *flytest.Server
	d    *fly.Driver
	logs *logBuffer
}

// newEnv starts a fake and a driver with test-sized timeouts; mod adjusts the driver's
// config. At cleanup it checks that no secret reached the driver's log.
func newEnv(t *testing.T, fcfg flytest.Config, mod func(*fly.Config)) *env {
	t.Helper()
	fcfg.Org, fcfg.Token = testOrg, testToken
	fake, err := flytest.New(fcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	cfg := fly.Config{
		Org:            testOrg,
		Region:         "ams",
		Token:          keystore.Secret(testToken),
		BaseURL:        fake.URL,
		RequestTimeout: 5 * time.Second,
		WaitTimeout:    time.Second,
		StartTimeout:   time.Minute,
		LeaseWait:      time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	logs := &logBuffer{}
	d, err := fly.New(cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { assertNoSecret(t, "log", logs.String()) })
	return &env{fake: fake, d: d, logs: logs}
}

// ensureAll runs every step of a gateway's creation on Fly, in order, as the provisioner
// core does.
func (e *env) ensureAll(ctx context.Context, id, image string) (fly.Machine, error) {
	if _, err := e.d.EnsureApp(ctx, id); err != nil {
		return fly.Machine{}, err
	}
	if _, err := e.d.EnsureVolume(ctx, id); err != nil {
		return fly.Machine{}, err
	}
	if _, err := e.d.EnsureIPs(ctx, id); err != nil {
		return fly.Machine{}, err
	}
	version, err := e.d.SetSecrets(ctx, id, tenantSecrets())
	if err != nil {
		return fly.Machine{}, err
	}
	return e.d.EnsureMachine(ctx, id, fly.MachineSpec{Image: image, SecretsVersion: version})
}

// assertOneOfEach checks that gateway id has exactly one app, volume, IPv6, shared IPv4
// and machine, the machine started on image with the volume mounted, the gateway on
// loopback and the secrets delivered.
func assertOneOfEach(t *testing.T, e *env, id, image string) {
	t.Helper()
	app := "mg-" + id
	got := e.fake.AppCounts(app)
	want := flytest.Counts{Apps: 1, Volumes: 1, IPs: 2, Machines: 1, Secrets: 2, Leases: got.Leases}
	if got != want {
		t.Fatalf("counts of %s: got %+v, want %+v", app, got, want)
	}
	if all := e.fake.Counts(); all.Apps != 1 {
		t.Fatalf("apps in the fake: got %d, want 1", all.Apps)
	}
	var v6, v4 int
	for _, ip := range e.fake.IPs(app) {
		if ip.Shared {
			v4++
		} else if strings.Contains(ip.IP, ":") {
			v6++
		}
	}
	if v6 != 1 || v4 != 1 {
		t.Fatalf("ips: got %d v6 and %d shared v4, want one of each", v6, v4)
	}
	vols := e.fake.Volumes(app)
	if !vols[0].Encrypted {
		t.Fatalf("volume %s: not encrypted", vols[0].ID)
	}
	m := e.fake.Machines(app)[0]
	if m.State != "started" || m.Config.Image != image {
		t.Fatalf("machine: got state %q image %q, want started %q", m.State, m.Config.Image, image)
	}
	if len(m.Config.Mounts) != 1 || m.Config.Mounts[0].Volume != vols[0].ID {
		t.Fatalf("machine mounts: got %+v, want volume %s", m.Config.Mounts, vols[0].ID)
	}
	if m.Config.Env[fly.EnvBind] != "loopback" || len(m.Config.Services) != 0 {
		t.Fatalf("machine: got bind %q and %d services, want loopback and none", m.Config.Env[fly.EnvBind], len(m.Config.Services))
	}
	vals, version := e.fake.SecretValues(app)
	if vals[fly.SecretGatewayToken] != gatewayToken || vals["ANTHROPIC_API_KEY"] != providerKey {
		t.Fatalf("secrets: got names %v, want the gateway token and the provider key delivered", keys(vals))
	}
	if booted, _ := e.fake.MachineSecretsVersion(app, m.ID); booted != version {
		t.Fatalf("machine secrets version: got %d, want %d", booted, version)
	}
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func assertNoSecret(t *testing.T, where, text string) {
	t.Helper()
	for _, s := range secretValues {
		if strings.Contains(text, s) {
			t.Errorf("%s carries a secret value (%.8s…)", where, s)
		}
	}
}

// waitFor polls cond until it holds or the test's deadline nears.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logBuffer is a bytes.Buffer safe for concurrent writers.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func errString(err error) string { return fmt.Sprint(err) }

// rawClient is a flaps client of the fake, for a test to act behind the driver's back.
func rawClient(t *testing.T, f *flytest.Server) *flaps.Client {
	t.Helper()
	c, err := flaps.NewWithOptions(t.Context(), flaps.NewClientOpts{Tokens: tokens.Parse(testToken), Transport: f.Transport()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func createVolume(t *testing.T, ctx context.Context, c *flaps.Client, app string) {
	t.Helper()
	if _, err := c.CreateVolume(ctx, app, flyapi.CreateVolumeRequest{Name: "gateway_data", Region: "ams"}); err != nil {
		t.Fatal(err)
	}
}

func assignIP(t *testing.T, ctx context.Context, c *flaps.Client, app, kind string) {
	t.Helper()
	if _, err := c.AssignIP(ctx, app, flaps.AssignIPRequest{Type: kind}); err != nil {
		t.Fatal(err)
	}
}

func stopMachine(t *testing.T, ctx context.Context, e *env, app, id string) {
	t.Helper()
	c := rawClient(t, e.fake)
	if err := c.Stop(ctx, app, flyapi.StopMachineInput{ID: id}, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(ctx, app, id, flaps.WithWaitStates("stopped"), flaps.WithWaitTimeout(time.Second)); err != nil {
		t.Fatal(err)
	}
}
