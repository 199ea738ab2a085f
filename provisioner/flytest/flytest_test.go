package flytest_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	fly "github.com/superfly/fly-go"
	"github.com/superfly/fly-go/flaps"
	"github.com/superfly/fly-go/tokens"

	"github.com/moltgate/moltgate/provisioner/flytest"
)

const token = "fo1_fake-test"

// start runs a fake and returns it with a real flaps client pointed at it.
func start(t *testing.T, cfg flytest.Config) (*flytest.Server, *flaps.Client) {
	t.Helper()
	cfg.Token = token
	s, err := flytest.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	c, err := flaps.NewWithOptions(t.Context(), flaps.NewClientOpts{Tokens: tokens.Parse(token), Transport: s.Transport()})
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

func status(err error) int {
	var fe *flaps.FlapsError
	if errors.As(err, &fe) {
		return fe.ResponseStatusCode
	}
	return 0
}

func must[T any](t *testing.T) func(v T, err error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// The real client decodes every answer of a gateway's whole life: app, volume, IPs,
// secrets, a machine launched under a lease, its states, its destruction.
func TestLifecycleWithTheRealClient(t *testing.T) {
	t.Parallel()
	s, c := start(t, flytest.Config{})
	ctx := t.Context()
	app := must[*flaps.App](t)(c.CreateApp(ctx, flaps.CreateAppRequest{Name: "mg-a", Org: "moltgate"}))
	if app.Name != "mg-a" || app.Organization.Slug != "moltgate" || app.ID == "" {
		t.Fatalf("app: got %+v", app)
	}
	size := 3
	vol := must[*fly.Volume](t)(c.CreateVolume(ctx, "mg-a", fly.CreateVolumeRequest{Name: "data", Region: "ams", SizeGb: &size}))
	if !vol.Encrypted || vol.SizeGb != 3 || vol.State != "created" || vol.CreatedAt.IsZero() {
		t.Fatalf("volume: got %+v, want encrypted 3 GB", vol)
	}
	v6 := must[*flaps.IPAssignment](t)(c.AssignIP(ctx, "mg-a", flaps.AssignIPRequest{Type: "v6"}))
	v4 := must[*flaps.IPAssignment](t)(c.AssignIP(ctx, "mg-a", flaps.AssignIPRequest{Type: "shared_v4"}))
	if v6.Shared || !v4.Shared || v6.CreatedAt.IsZero() {
		t.Fatalf("ips: got %+v and %+v", v6, v4)
	}
	if _, err := c.AssignIP(ctx, "mg-a", flaps.AssignIPRequest{Type: "shared_v4", Region: "ams"}); status(err) != 400 {
		t.Fatalf("shared_v4 with a region: got %v, want 400", err)
	}
	val := "v1"
	sec := must[*fly.UpdateAppSecretsResp](t)(c.UpdateAppSecrets(ctx, "mg-a", map[string]*string{"TOKEN": &val}))
	if sec.Version != 1 || len(sec.Secrets) != 1 || sec.Secrets[0].Value != nil {
		t.Fatalf("secrets: got %+v, want version 1 and no value shown", sec)
	}

	in := fly.LaunchMachineInput{
		Name: "gateway", Region: "ams", LeaseTTL: 30, MinSecretsVersion: &sec.Version,
		Config: &fly.MachineConfig{
			Image:  "registry.example.test/gw:1@sha256:" + repeat("a", 64),
			Env:    map[string]string{"BIND": "loopback"},
			Guest:  &fly.MachineGuest{CPUKind: "shared", CPUs: 1, MemoryMB: 1024},
			Mounts: []fly.MachineMount{{Volume: vol.ID, Path: "/data"}},
		},
	}
	m := must[*fly.Machine](t)(c.Launch(ctx, "mg-a", in))
	if m.State != "created" || m.LeaseNonce == "" || m.ImageRef.Digest != "sha256:"+repeat("a", 64) ||
		m.ImageRef.Tag != "1" || m.ImageRef.Registry != "registry.example.test" || m.ImageRef.Repository != "gw" {
		t.Fatalf("launch: got state %q nonce %q image %+v", m.State, m.LeaseNonce, m.ImageRef)
	}
	if _, err := c.Launch(ctx, "mg-a", in); status(err) != 409 {
		t.Fatalf("second machine of the same name: got %v, want 409", err)
	}
	if err := c.Wait(ctx, "mg-a", m.ID, flaps.WithWaitStates("started"), flaps.WithWaitTimeout(time.Second)); err != nil {
		t.Fatal(err)
	}
	got := must[*fly.Machine](t)(c.Get(ctx, "mg-a", m.ID))
	if got.State != "started" || got.Config.Mounts[0].Volume != vol.ID || got.Config.Env["BIND"] != "loopback" {
		t.Fatalf("get: got %+v", got)
	}
	if vols := must[[]fly.Volume](t)(c.GetVolumes(ctx, "mg-a")); vols[0].AttachedMachine == nil || *vols[0].AttachedMachine != m.ID {
		t.Fatalf("volume: got %+v, want attached to %s", vols[0], m.ID)
	}

	// Under the launch lease: a mutation without its nonce is refused, with it allowed.
	if err := c.Stop(ctx, "mg-a", fly.StopMachineInput{ID: m.ID}, ""); status(err) != 409 {
		t.Fatalf("stop without the nonce: got %v, want 409", err)
	}
	if err := c.Stop(ctx, "mg-a", fly.StopMachineInput{ID: m.ID}, m.LeaseNonce); err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(ctx, "mg-a", m.ID, flaps.WithWaitStates("stopped"), flaps.WithWaitTimeout(time.Second)); err != nil {
		t.Fatal(err)
	}
	start := must[*fly.MachineStartResponse](t)(c.Start(ctx, "mg-a", m.ID, m.LeaseNonce))
	if start.PreviousState != "stopped" {
		t.Fatalf("start: got previous state %q, want stopped", start.PreviousState)
	}
	in.ID, in.Config.Image = m.ID, "registry.example.test/gw@sha256:"+repeat("b", 64)
	up := must[*fly.Machine](t)(c.Update(ctx, "mg-a", in, m.LeaseNonce))
	if up.InstanceID == m.InstanceID {
		t.Fatal("update: the instance did not change")
	}
	if err := c.Wait(ctx, "mg-a", m.ID, flaps.WithWaitVersion(up.InstanceID), flaps.WithWaitTimeout(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := c.ReleaseLease(ctx, "mg-a", m.ID, m.LeaseNonce); err != nil {
		t.Fatal(err)
	}

	if err := c.Destroy(ctx, "mg-a", fly.RemoveMachineInput{ID: m.ID}, ""); status(err) != 412 {
		t.Fatalf("destroy a started machine without kill: got %v, want 412", err)
	}
	if _, err := c.DeleteVolume(ctx, "mg-a", vol.ID); status(err) != 412 {
		t.Fatalf("delete an attached volume: got %v, want 412", err)
	}
	if err := c.Destroy(ctx, "mg-a", fly.RemoveMachineInput{ID: m.ID, Kill: true}, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(ctx, "mg-a", m.ID, flaps.WithWaitStates("destroyed"), flaps.WithWaitTimeout(time.Second)); err != nil {
		t.Fatal(err)
	}
	if ms := must[[]*fly.Machine](t)(c.List(ctx, "mg-a", "")); len(ms) != 0 {
		t.Fatalf("list after destroy: got %d machines, want 0", len(ms))
	}
	if _, err := c.DeleteVolume(ctx, "mg-a", vol.ID); err != nil {
		t.Fatal(err)
	}
	if vols := must[[]fly.Volume](t)(c.GetVolumes(ctx, "mg-a")); len(vols) != 0 {
		t.Fatalf("volumes after delete: got %d, want 0 (scheduling_destroy is filtered)", len(vols))
	}
	if all := must[[]fly.Volume](t)(c.GetAllVolumes(ctx, "mg-a")); len(all) != 1 || all[0].State != "scheduling_destroy" {
		t.Fatalf("all volumes: got %+v, want one scheduling_destroy", all)
	}
	for _, ip := range []string{v6.IP, v4.IP} {
		if err := c.DeleteIPAssignment(ctx, "mg-a", ip); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.DeleteApp(ctx, "mg-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetApp(ctx, "mg-a"); status(err) != 404 || err.Error() != "app not found" {
		t.Fatalf("get after delete: got %v, want 404 app not found", err)
	}
	if got := s.Counts(); got != (flytest.Counts{}) {
		t.Fatalf("counts: got %+v, want none", got)
	}
}

func TestAppNamesAreGlobal(t *testing.T) {
	t.Parallel()
	for _, foreign := range []int{401, 403} {
		t.Run(strconv.Itoa(foreign), func(t *testing.T) {
			t.Parallel()
			s, c := start(t, flytest.Config{ForeignStatus: foreign})
			ctx := t.Context()
			if err := s.SeedApp("mg-taken", "rival"); err != nil {
				t.Fatal(err)
			}
			if _, err := c.CreateApp(ctx, flaps.CreateAppRequest{Name: "mg-taken", Org: "moltgate"}); status(err) != 422 {
				t.Fatalf("create a taken name: got %v, want 422", err)
			}
			if _, err := c.GetApp(ctx, "mg-taken"); status(err) != foreign || err.Error() != "unauthorized" {
				t.Fatalf("get another org's app: got %v, want %d unauthorized", err, foreign)
			}
			if _, err := c.CreateApp(ctx, flaps.CreateAppRequest{Name: "mg-x", Org: "rival"}); status(err) != 403 {
				t.Fatalf("create in another org: got %v, want 403", err)
			}
			if _, err := c.CreateApp(ctx, flaps.CreateAppRequest{Name: "MG_bad", Org: "moltgate"}); status(err) != 422 {
				t.Fatalf("create an invalid name: got %v, want 422", err)
			}
			apps := must[[]flaps.App](t)(c.ListApps(ctx, flaps.ListAppsRequest{OrgSlug: "moltgate"}))
			if len(apps) != 0 {
				t.Fatalf("our apps: got %d, want 0", len(apps))
			}
		})
	}
}

func TestVolumeNamesAreNotUnique(t *testing.T) {
	t.Parallel()
	s, c := start(t, flytest.Config{})
	ctx := t.Context()
	must[*flaps.App](t)(c.CreateApp(ctx, flaps.CreateAppRequest{Name: "mg-v", Org: "moltgate"}))
	for range 2 {
		must[*fly.Volume](t)(c.CreateVolume(ctx, "mg-v", fly.CreateVolumeRequest{Name: "data", Region: "ams"}))
	}
	if got := s.AppCounts("mg-v").Volumes; got != 2 {
		t.Fatalf("volumes: got %d, want 2", got)
	}
}

func TestSecretsVersions(t *testing.T) {
	t.Parallel()
	s, c := start(t, flytest.Config{})
	ctx := t.Context()
	must[*flaps.App](t)(c.CreateApp(ctx, flaps.CreateAppRequest{Name: "mg-s", Org: "moltgate"}))
	a, b := "a", "b"
	steps := []struct {
		values map[string]*string
		want   uint64
	}{
		{map[string]*string{"A": &a, "B": &b}, 1},
		{map[string]*string{"A": &a}, 1},           // no change: same version
		{map[string]*string{"A": &b, "B": nil}, 2}, // set and unset in one call: one version
		{map[string]*string{"C": nil}, 2},          // unsetting nothing changes nothing
	}
	for i, st := range steps {
		res := must[*fly.UpdateAppSecretsResp](t)(c.UpdateAppSecrets(ctx, "mg-s", st.values))
		if res.Version != st.want {
			t.Fatalf("step %d: got version %d, want %d", i, res.Version, st.want)
		}
	}
	vals, v := s.SecretValues("mg-s")
	if v != 2 || len(vals) != 1 || vals["A"] != "b" {
		t.Fatalf("secrets: got %v at %d, want A=b at 2", vals, v)
	}
	list := must[[]fly.AppSecret](t)(c.ListAppSecrets(ctx, "mg-s", nil, false))
	if len(list) != 1 || list[0].Value != nil || list[0].Digest == "" {
		t.Fatalf("list: got %+v, want A with a digest and no value", list)
	}
	too := uint64(3)
	_, err := c.Launch(ctx, "mg-s", fly.LaunchMachineInput{MinSecretsVersion: &too, Config: &fly.MachineConfig{Image: "x"}})
	if status(err) != 412 {
		t.Fatalf("launch wanting unknown secrets: got %v, want 412", err)
	}
}

func TestLeases(t *testing.T) {
	t.Parallel()
	s, c := start(t, flytest.Config{})
	ctx := t.Context()
	must[*flaps.App](t)(c.CreateApp(ctx, flaps.CreateAppRequest{Name: "mg-l", Org: "moltgate"}))
	m := must[*fly.Machine](t)(c.Launch(ctx, "mg-l", fly.LaunchMachineInput{Config: &fly.MachineConfig{Image: "x"}}))
	ttl := 10
	l := must[*fly.MachineLease](t)(c.AcquireLease(ctx, "mg-l", m.ID, &ttl))
	if l.Data == nil || l.Data.Nonce == "" || l.Data.Owner == "" {
		t.Fatalf("acquire: got %+v", l)
	}
	// flaps retries a refused acquire for up to a minute: bound it.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := c.AcquireLease(short, "mg-l", m.ID, &ttl); err == nil {
		t.Fatal("second acquire: got a lease, want a refusal")
	}
	if found := must[*fly.MachineLease](t)(c.FindLease(ctx, "mg-l", m.ID)); found.Data.Nonce != "" {
		t.Fatal("find lease: the nonce was disclosed")
	}
	if _, err := c.RefreshLease(ctx, "mg-l", m.ID, &ttl, "wrong"); status(err) != 409 {
		t.Fatalf("refresh with a wrong nonce: got %v, want 409", err)
	}
	must[*fly.MachineLease](t)(c.RefreshLease(ctx, "mg-l", m.ID, &ttl, l.Data.Nonce))
	if err := c.ReleaseLease(ctx, "mg-l", m.ID, "wrong"); status(err) != 409 {
		t.Fatalf("release with a wrong nonce: got %v, want 409", err)
	}
	if err := c.ReleaseLease(ctx, "mg-l", m.ID, l.Data.Nonce); err != nil {
		t.Fatal(err)
	}
	// A lease held by another expires on the server's clock.
	if _, err := s.HoldLease("mg-l", m.ID, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(ctx, "mg-l", fly.StopMachineInput{ID: m.ID}, ""); status(err) != 409 {
		t.Fatalf("stop under another's lease: got %v, want 409", err)
	}
	s.Advance(2 * time.Minute)
	if err := c.Stop(ctx, "mg-l", fly.StopMachineInput{ID: m.ID}, ""); err != nil {
		t.Fatalf("stop after the lease expired: %v", err)
	}
}

// wait answers 408 after its bound while the machine is not there yet.
func TestWait408(t *testing.T) {
	t.Parallel()
	s, c := start(t, flytest.Config{MaxWait: 10 * time.Millisecond})
	ctx := t.Context()
	must[*flaps.App](t)(c.CreateApp(ctx, flaps.CreateAppRequest{Name: "mg-w", Org: "moltgate"}))
	s.HoldBoot(true)
	m := must[*fly.Machine](t)(c.Launch(ctx, "mg-w", fly.LaunchMachineInput{Config: &fly.MachineConfig{Image: "x"}}))
	if err := c.Wait(ctx, "mg-w", m.ID, flaps.WithWaitTimeout(time.Second)); status(err) != 408 {
		t.Fatalf("wait while boot is held: got %v, want 408", err)
	}
	if got := must[*fly.Machine](t)(c.Get(ctx, "mg-w", m.ID)); got.State != "starting" {
		t.Fatalf("state: got %q, want starting", got.State)
	}
	s.HoldBoot(false)
	if err := c.Wait(ctx, "mg-w", m.ID, flaps.WithWaitTimeout(time.Second)); err != nil {
		t.Fatal(err)
	}
	s.FailImage("y")
	in := fly.LaunchMachineInput{ID: m.ID, Config: &fly.MachineConfig{Image: "y"}}
	must[*fly.Machine](t)(c.Update(ctx, "mg-w", in, ""))
	if err := c.Wait(ctx, "mg-w", m.ID, flaps.WithWaitTimeout(time.Second)); status(err) != 408 {
		t.Fatalf("wait for a failing image: got %v, want 408", err)
	}
	if got := must[*fly.Machine](t)(c.Get(ctx, "mg-w", m.ID)); got.State != "failed" {
		t.Fatalf("state: got %q, want failed", got.State)
	}
}

// Each fault does what it says: the "after" kinds keep the effect, the others do not.
func TestFaults(t *testing.T) {
	t.Parallel()
	rows := []struct {
		fault      flytest.Fault
		wantStatus int
		wantApp    bool
	}{
		{flytest.Fault{Kind: flytest.Fail}, 500, false},
		{flytest.Fault{Kind: flytest.FailAfter}, 500, true},
		{flytest.Fault{Kind: flytest.FailAfter, Status: 409}, 409, true},
		{flytest.Fault{Kind: flytest.RateLimit, RetryAfter: 1500 * time.Millisecond}, 429, false},
		{flytest.Fault{Kind: flytest.Taken}, 422, false},
		{flytest.Fault{Kind: flytest.Taken, Status: 403}, 403, false},
		{flytest.Fault{Kind: flytest.Stall}, 0, false},
		{flytest.Fault{Kind: flytest.StallAfter}, 0, true},
	}
	for _, r := range rows {
		t.Run(r.fault.Kind.String()+strconv.Itoa(r.fault.Status), func(t *testing.T) {
			t.Parallel()
			s, c := start(t, flytest.Config{})
			s.Inject(flytest.RouteCreateApp, r.fault)
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			defer cancel()
			_, err := c.CreateApp(ctx, flaps.CreateAppRequest{Name: "mg-f", Org: "moltgate"})
			if got := status(err); err == nil || got != r.wantStatus {
				t.Fatalf("create: got %v (status %d), want status %d", err, got, r.wantStatus)
			}
			if got := s.Counts().Apps == 1; got != r.wantApp {
				t.Fatalf("app exists: got %v, want %v", got, r.wantApp)
			}
		})
	}
	s, _ := start(t, flytest.Config{})
	s.Inject(flytest.RouteCreateApp, flytest.Fault{Kind: flytest.RateLimit, RetryAfter: 1500 * time.Millisecond})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, s.URL+"/v1/apps", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "2" {
		t.Fatalf("rate limit: got %d Retry-After %q, want 429 and 2", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if got := s.Calls(flytest.RouteCreateApp); got != 1 {
		t.Fatalf("calls: got %d, want 1", got)
	}
}

func TestTokenChecked(t *testing.T) {
	t.Parallel()
	s, _ := start(t, flytest.Config{})
	c, err := flaps.NewWithOptions(t.Context(), flaps.NewClientOpts{Tokens: tokens.Parse("fo1_other"), Transport: s.Transport()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListApps(t.Context(), flaps.ListAppsRequest{OrgSlug: "moltgate"}); status(err) != 401 {
		t.Fatalf("wrong token: got %v, want 401", err)
	}
}

func TestUniformLatency(t *testing.T) {
	t.Parallel()
	f := flytest.UniformLatency(100*time.Millisecond, 800*time.Millisecond, 7)
	for range 1000 {
		if d := f(); d < 100*time.Millisecond || d > 800*time.Millisecond {
			t.Fatalf("latency %s outside [100ms, 800ms]", d)
		}
	}
}

func repeat(s string, n int) string { return strings.Repeat(s, n) }
