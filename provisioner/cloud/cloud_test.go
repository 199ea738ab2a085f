package cloud_test

import (
	"bytes"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner"
	"github.com/moltgate/moltgate/provisioner/cftest"
	"github.com/moltgate/moltgate/provisioner/cloud"
	"github.com/moltgate/moltgate/provisioner/flytest"
	"github.com/moltgate/moltgate/provisioner/provisionertest"
)

// Issue 14: one create makes one of each resource on both clouds, wired together, and the
// gateway registered at its public hostname with a token the machine holds.
func TestProvisionsOneOfEach(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, d := e.process()
	provisionertest.Provisioned(t, p, spec("gw1"))
	e.assertOneOfEach(t, p, d, "gw1")
	// A second pass finds everything as asked and changes nothing.
	calls := e.fly.Calls(flytest.RouteCreateApp) + e.cf.Calls(cftest.RouteCreateTunnel)
	provisionertest.Converge(t, p, "gw1")
	if got := e.fly.Calls(flytest.RouteCreateApp) + e.cf.Calls(cftest.RouteCreateTunnel); got != calls {
		t.Errorf("creates on a second pass: got %d more, want none", got-calls)
	}
	for _, ev := range e.audit.Events() {
		e.assertNoSecret(t, "audit event", ev.Action+ev.Reason+strings.Join(mapValues(ev.Details), " "))
	}
}

// Issue 14: a token rotation reaches the machine: the app's secret changes, the machine
// restarts on the new secrets version, and only then does the registry take the new token.
func TestRotateTokenReachesMachine(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, d := e.process()
	provisionertest.Provisioned(t, p, spec("gw1"))
	before, _ := e.reg.Lookup("gw1")
	machine := e.fly.Machines("mg-gw1")[0].ID
	if _, err := p.RotateToken(t.Context(), "gw1"); err != nil {
		t.Fatal(err)
	}
	provisionertest.Converge(t, p, "gw1")
	after, _ := e.reg.Lookup("gw1")
	if string(after.Token) == string(before.Token) {
		t.Fatal("the registry still holds the old token")
	}
	e.assertOneOfEach(t, p, d, "gw1") // the app's token is the registry's, the machine on its secrets version
	if ms := e.fly.Machines("mg-gw1"); len(ms) != 1 || ms[0].ID != machine {
		t.Errorf("machines: got %+v, want machine %s updated in place", ms, machine)
	}
}

// Issue 14: gateway upgrade on a fly gateway goes through this driver to its machine, which
// ends on the new image, the same machine; the next pass finds no drift and changes nothing.
func TestUpgradeThroughTheCloudDriver(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, _ := e.process()
	provisionertest.Provisioned(t, p, spec("gw1"))
	machine := e.fly.Machines("mg-gw1")[0].ID
	next := "registry.example.test/moltgate/gateway@sha256:" + strings.Repeat("b", 64)
	st, err := p.Upgrade(t.Context(), "gw1", next)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	if st.Spec.Image != next {
		t.Errorf("spec image after the upgrade: %q, want %q", st.Spec.Image, next)
	}
	if ms := e.fly.Machines("mg-gw1"); len(ms) != 1 || ms[0].ID != machine || ms[0].Config == nil || ms[0].Config.Image != next {
		t.Fatalf("machines after the upgrade: %+v, want machine %s on %s", ms, machine, next)
	}
	provisionertest.Converge(t, p, "gw1")
	if st, err := p.Get("gw1"); err != nil || len(st.Drift) != 0 {
		t.Errorf("after the upgrade's next pass: drift %+v, %v; want none", st.Drift, err)
	}
	if ms := e.fly.Machines("mg-gw1"); len(ms) != 1 || ms[0].Config.Image != next {
		t.Errorf("machines after the next pass: %+v, want the one on %s", ms, next)
	}
}

// Bad input gets a clear error and changes nothing: an image not pinned by digest, or
// none, is refused before anything is recorded.
func TestRefusesUnpinnedImage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, _ := e.process()
	for _, image := range []string{"", "registry.example.test/moltgate/gateway:latest"} {
		s := spec("gw1")
		s.Image = image
		_, _, err := p.Apply(t.Context(), s)
		if !errors.Is(err, provisioner.ErrInvalid) || !strings.Contains(err.Error(), "image") {
			t.Errorf("image %q: got %v, want ErrInvalid naming the image", image, err)
		}
	}
	if _, err := p.Get("gw1"); !errors.Is(err, provisioner.ErrNotFound) {
		t.Errorf("after refused specs: %v, want nothing recorded", err)
	}
	if e.fly.Counts() != (flytest.Counts{}) || e.cf.Counts() != (cftest.Counts{}) {
		t.Errorf("after refused specs: the clouds changed")
	}
}

// Issue 14: a pass killed right after any step, at any of its three moments, and resumed by
// another process once the lease expired, ends with exactly one of each resource on both
// clouds and a working registry record.
func TestCrashAndResumeAfterEveryStep(t *testing.T) {
	t.Parallel()
	provisionertest.EachKillMoment(t, plan, func(t *testing.T, step, moment string) {
		e := newEnv(t)
		k := &provisionertest.KillSwitch{}
		p1, _ := e.process(func(c *provisioner.Config, _ *provisioner.Deps) { c.KillAt = k.KillAt })
		if _, _, err := p1.Apply(t.Context(), spec("gw1")); err != nil {
			t.Fatal(err)
		}
		p2, d2 := e.process()
		provisionertest.KillAndResume(t, k, "ensure "+step+": "+moment, p1, p2, e.clock, 30*time.Second, "gw1")
		e.assertOneOfEach(t, p2, d2, "gw1")
	})
}

// faultAt is where a step's fault is injected: the create (or, for secrets, the set) the
// step makes on one of the clouds.
type faultAt struct {
	step string
	fly  flytest.Route
	cf   cftest.Route
}

var faultRoutes = []faultAt{
	{step: "cloudflare.tunnel", cf: cftest.RouteCreateTunnel},
	{step: "cloudflare.tunnel/ingress", cf: cftest.RoutePutTunnelConfig},
	{step: "fly.app", fly: flytest.RouteCreateApp},
	{step: "fly.volume", fly: flytest.RouteCreateVolume},
	{step: "fly.ips", fly: flytest.RouteAssignIP},
	{step: "fly.secrets", fly: flytest.RouteUpdateSecrets},
	{step: "fly.machine", fly: flytest.RouteLaunch},
	{step: "cloudflare.dns", cf: cftest.RouteCreateRecord},
	{step: "cloudflare.access/token", cf: cftest.RouteCreateServiceToken},
	{step: "cloudflare.access/policy", cf: cftest.RouteCreatePolicy},
	{step: "cloudflare.access", cf: cftest.RouteCreateApp},
}

// Issue 14: the faults the clouds give, at every step: a 500 after the resource was made
// (the SDK would have retried the create), a timeout after it was made, a 429 with
// Retry-After. Passes go on until one ends well, with exactly one of each resource.
func TestFaultsAtEveryStep(t *testing.T) {
	t.Parallel()
	for _, at := range faultRoutes {
		for _, fault := range []string{"500-after", "timeout-after", "429"} {
			t.Run(at.step+"/"+fault, func(t *testing.T) {
				t.Parallel()
				e := newEnv(t)
				e.timeout = 500 * time.Millisecond
				p, d := e.process()
				inject(e, at, fault)
				if _, _, err := p.Apply(t.Context(), spec("gw1")); err != nil {
					t.Fatal(err)
				}
				provisionertest.Converge(t, p, "gw1")
				e.assertOneOfEach(t, p, d, "gw1")
				if n := e.fly.Calls(at.fly) + e.cf.Calls(at.cf); n < 2 && fault == "429" {
					t.Errorf("calls of %s%s: got %d, want the 429 and a retry", at.fly, at.cf, n)
				}
			})
		}
	}
}

func inject(e *env, at faultAt, fault string) {
	fk := map[string]flytest.FaultKind{"500-after": flytest.FailAfter, "timeout-after": flytest.StallAfter, "429": flytest.RateLimit}
	ck := map[string]cftest.FaultKind{"500-after": cftest.FailAfter, "timeout-after": cftest.StallAfter, "429": cftest.RateLimit}
	if at.fly != "" {
		e.fly.Inject(at.fly, flytest.Fault{Kind: fk[fault], RetryAfter: time.Second})
	} else {
		e.cf.Inject(at.cf, cftest.Fault{Kind: ck[fault], RetryAfter: time.Second})
	}
}

// Issue 14: two processes racing on one gateway (and a second gateway beside it) still make
// one of each resource: the lease keeps them apart.
func TestRacingProvisioners(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p1, d1 := e.process()
	p2, _ := e.process()
	if _, _, err := p1.Apply(t.Context(), spec("gw1")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, p := range []*provisioner.Provisioner{p1, p2, p1, p2} {
		wg.Go(func() {
			for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
				err := p.Reconcile(t.Context(), "gw1")
				if err == nil {
					return
				}
				if !errors.Is(err, provisioner.ErrLeaseHeld) {
					t.Errorf("pass: %v", err)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
			t.Errorf("no pass ended well")
		})
	}
	wg.Wait()
	e.assertOneOfEach(t, p1, d1, "gw1")
	if n := e.fly.Calls(flytest.RouteCreateApp); n != 1 {
		t.Errorf("app creates: got %d, want 1", n)
	}
	if n := e.cf.Calls(cftest.RouteCreateTunnel); n != 1 {
		t.Errorf("tunnel creates: got %d, want 1", n)
	}
}

// Issue 14: destroy leaves both clouds empty, even when the process dies halfway through
// it, at any moment of any step, and another one finishes the job.
func TestDestroyAfterCrashHalfway(t *testing.T) {
	t.Parallel()
	provisionertest.EachKillMoment(t, plan, func(t *testing.T, step, moment string) {
		e := newEnv(t)
		k := &provisionertest.KillSwitch{}
		p1, _ := e.process(func(c *provisioner.Config, _ *provisioner.Deps) { c.KillAt = k.KillAt })
		provisionertest.Provisioned(t, p1, spec("gw1"))
		if _, err := p1.Destroy(t.Context(), "gw1"); err != nil {
			t.Fatal(err)
		}
		p2, _ := e.process()
		provisionertest.KillAndResume(t, k, "destroy "+step+": "+moment, p1, p2, e.clock, 30*time.Second, "gw1")
		e.assertGone(t, p2, "gw1")
	})
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// roundTripper is a func as an http.RoundTripper: it sees what the transport sends.
type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Requests to a gateway's hostname carry moltgate's service token, the one the Access
// policies admit; requests to other hosts carry nothing of it.
func TestTransportAddsServiceToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, d := e.process()
	provisionertest.Provisioned(t, p, spec("gw1"))
	var got http.Header
	rt := d.Transport(roundTripper(func(r *http.Request) (*http.Response, error) {
		got = r.Header.Clone()
		return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: r}, nil
	}))
	tok := e.cf.ServiceTokens()[0]
	for _, tc := range []struct {
		url  string
		want bool
	}{{"https://gw1." + domain + "/readyz", true}, {"http://127.0.0.1:9/readyz", false}, {"https://evil.example.test/", false}} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, tc.url, nil)
		if _, err := rt.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
		has := got.Get("CF-Access-Client-Id") == tok.ClientID && got.Get("CF-Access-Client-Secret") == tok.ClientSecret
		if has != tc.want || !tc.want && got.Get("CF-Access-Client-Secret") != "" {
			t.Errorf("%s: service token sent %v, want %v", tc.url, has, tc.want)
		}
		if req.Header.Get("CF-Access-Client-Secret") != "" {
			t.Errorf("%s: the caller's request was changed", tc.url)
		}
	}
}

// A key rotation reseals the service token moltgate keeps: under the new keys it opens to
// the same secret, and the gateway stays as it was (no token replaced).
func TestResealKeepsServiceToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, d := e.process()
	provisionertest.Provisioned(t, p, spec("gw1"))
	ring2, _ := keystore.NewKeyring(2, bytes.Repeat([]byte{8}, keystore.KeySize))
	ks2 := keystore.New(ring2)
	resealed := 0
	fn := func(tenant, record, purpose string, sealed []byte) ([]byte, bool, error) {
		if h, err := keystore.ParseHeader(sealed); err == nil && h.Master == 2 {
			return sealed, false, nil
		}
		plain, err := e.ks.Open(tenant, record, purpose, sealed)
		if err != nil {
			return nil, false, err
		}
		out, err := ks2.Seal(tenant, record, purpose, plain)
		resealed++
		return out, err == nil, err
	}
	d.Quiesce()
	for range 2 { // the second finds nothing to do
		if err := d.Reseal(t.Context(), fn); err != nil || resealed != 1 {
			t.Fatalf("reseal: %v, %d resealed; want the service token once", err, resealed)
		}
	}
	fd, cd := e.drivers()
	d2, err := cloud.New(cloud.Config{}, cloud.Deps{Fly: fd, Cloudflare: cd, KV: e.kv, Sealer: ks2, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	id, secret, err := d2.AccessCredentials()
	if tok := e.cf.ServiceTokens()[0]; err != nil || id != tok.ClientID || string(secret) != tok.ClientSecret {
		t.Fatalf("after reseal: %v; the kept token does not open under the new keys to Cloudflare's", err)
	}
}
