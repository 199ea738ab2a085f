package cloud_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner"
	"github.com/moltgate/moltgate/provisioner/cftest"
	"github.com/moltgate/moltgate/provisioner/cloud"
	"github.com/moltgate/moltgate/provisioner/cloudflare"
	"github.com/moltgate/moltgate/provisioner/fly"
	"github.com/moltgate/moltgate/provisioner/flytest"
	"github.com/moltgate/moltgate/provisioner/provisionertest"
	"github.com/moltgate/moltgate/registry"
	"github.com/moltgate/moltgate/store"
)

const (
	flyToken = "fo1_cloudtest-LEAKCHECK-4a1b"
	cfToken  = "cf-cloudtest-LEAKCHECK-9e2d"
	domain   = "gw.example.test"
	imageA   = "registry.example.test/moltgate/gateway@sha256:1111111111111111111111111111111111111111111111111111111111111111"
	imageB   = "registry.example.test/moltgate/gateway@sha256:2222222222222222222222222222222222222222222222222222222222222222"
	// providerKey is the tenant's active provider key: it must reach the app's secrets and
	// nothing else.
	providerKey = "sk-ant-cloudtest-LEAKCHECK-77c3"
)

// plan is the fly driver's plan as the provisioner runs it.
var plan = []string{"token", "cloudflare.tunnel", "fly.app", "fly.volume", "fly.ips", "fly.secrets", "fly.machine",
	"cloudflare.dns", "cloudflare.access", "register"}

// env is what several provisioners ("processes") share: the store, the registry, the
// keystore, the audit sink, the clock, and the two fake clouds.
type env struct {
	t     testing.TB
	kv    *store.Bolt
	ks    *keystore.Keystore
	reg   *registry.Registry
	audit *provisionertest.Audit
	clock *testenv.Clock
	fly   *flytest.Server
	cf    *cftest.Server
	logs  *testenv.LogBuffer
	// timeout is the drivers' RequestTimeout: a stalled call gives up after it.
	timeout time.Duration
	// cfRateLimit keeps the Cloudflare driver's default client-side rate limit (benches);
	// tests lift it.
	cfRateLimit bool
	n           int
}

// newEnv starts the fakes (latency, when set, delays each of their requests) and the
// stores.
func newEnv(t testing.TB, latency ...func() time.Duration) *env {
	t.Helper()
	s := provisionertest.NewStores(t)
	fc := flytest.Config{Org: "moltgate", Token: flyToken}
	cc := cftest.Config{Zone: "example.test", Token: cfToken, MaxPerPage: 3, DefaultPerPage: 3}
	if len(latency) > 0 {
		fc.Latency, cc.Latency = latency[0], latency[0]
		cc.MaxPerPage, cc.DefaultPerPage = 50, 20
	}
	f, err := flytest.New(fc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	c, err := cftest.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	e := &env{t: t, kv: s.KV, ks: s.Keystore, reg: s.Registry, audit: &provisionertest.Audit{}, clock: testenv.NewClock(time.Now()),
		fly: f, cf: c, logs: &testenv.LogBuffer{}, timeout: 2 * time.Second}
	t.Cleanup(func() { e.assertNoSecret(t, "log", e.logs.String()) })
	return e
}

// drivers returns the real fly and cloudflare drivers pointed at the fakes.
func (e *env) drivers() (*fly.Driver, *cloudflare.Driver) {
	e.t.Helper()
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	fd, err := fly.New(fly.Config{Org: "moltgate", Region: "ams", Token: keystore.Secret(flyToken), BaseURL: e.fly.URL,
		RequestTimeout: e.timeout, WaitTimeout: time.Second, StartTimeout: time.Minute, LeaseWait: time.Second}, log)
	if err != nil {
		e.t.Fatal(err)
	}
	cc := cloudflare.Config{AccountID: "acc-test", ZoneID: "zone-test", GatewayDomain: domain,
		APIToken: keystore.Secret(cfToken), BaseURL: e.cf.BaseURL(), RequestTimeout: e.timeout,
		RateLimit: 100000, RatePeriod: time.Second}
	if e.cfRateLimit {
		cc.RateLimit, cc.RatePeriod = 0, 0
	}
	cd, err := cloudflare.New(cc, log)
	if err != nil {
		e.t.Fatal(err)
	}
	return fd, cd
}

// process returns a new provisioner on e, with a driver "fly" of its own: another
// process, with a holder of its own.
func (e *env) process(mod ...func(*provisioner.Config, *provisioner.Deps)) (*provisioner.Provisioner, *cloud.Driver) {
	e.t.Helper()
	e.n++
	fd, cd := e.drivers()
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := cloud.New(cloud.Config{}, cloud.Deps{Fly: fd, Cloudflare: cd, KV: e.kv, Sealer: e.ks, Logger: log})
	if err != nil {
		e.t.Fatal(err)
	}
	keys := tenantKeys{}
	cfg := provisioner.Config{Drivers: map[string]provisioner.Driver{"fly": d}, Holder: fmt.Sprintf("process-%d", e.n),
		LeaseTTL: 30 * time.Second}
	deps := provisioner.Deps{KV: e.kv, Sealer: e.ks, Registry: e.reg, Audit: e.audit, Keys: keys, Opener: keys,
		Logger: log, Metrics: prometheus.NewRegistry(), Now: e.clock.Now}
	for _, m := range mod {
		m(&cfg, &deps)
	}
	p, err := provisioner.New(cfg, deps)
	if err != nil {
		e.t.Fatal(err)
	}
	return p, d
}

func spec(id string) provisioner.Spec {
	return provisioner.Spec{ID: id, Tenant: "acme", Owner: "user_alice", Driver: "fly", Image: imageA}
}

// assertOneOfEach checks the end state of a provisioned gateway: one of each resource in
// both fakes, wired together (the machine on the spec's image with the registry's token,
// the tunnel's token and the tenant's key as secrets; the hostname a CNAME to the tunnel;
// the Access policy admitting the service token moltgate keeps), the registry's record at
// the gateway's hostname, and a ready status.
func (e *env) assertOneOfEach(t *testing.T, p *provisioner.Provisioner, d *cloud.Driver, id string) {
	t.Helper()
	app := "mg-" + id
	// A lease taken by a launch whose answer was lost expires by itself.
	got := e.fly.AppCounts(app)
	if want := (flytest.Counts{Apps: 1, Volumes: 1, IPs: 2, Machines: 1, Secrets: 3, Leases: got.Leases}); got != want {
		t.Errorf("fly: got %+v, want %+v", got, want)
	}
	if got, want := e.cf.Counts(), (cftest.Counts{Tunnels: 1, Records: 1, ServiceTokens: 1, Policies: 1, Apps: 1}); got != want {
		t.Errorf("cloudflare: got %+v, want %+v", got, want)
	}
	entry, ok := e.reg.Lookup(id)
	if !ok {
		t.Fatalf("%s is not in the registry", id)
	}
	if want := "https://" + id + "." + domain; entry.Upstream != want {
		t.Errorf("registry upstream %q, want %q", entry.Upstream, want)
	}
	secrets, version := e.fly.SecretValues(app)
	var tunnel cftest.Tunnel
	for _, tu := range e.cf.Tunnels() {
		if !tu.Deleted {
			tunnel = tu
		}
	}
	if secrets[fly.SecretGatewayToken] != string(entry.Token) {
		t.Errorf("the app's gateway token is not the registry's")
	}
	if secrets[cloud.SecretTunnelToken] != e.cf.TunnelToken(tunnel.ID) || secrets["ANTHROPIC_API_KEY"] != providerKey {
		t.Errorf("the app's tunnel token or provider key is not the one asked for")
	}
	if ms := e.fly.Machines(app); len(ms) == 1 {
		m := ms[0]
		sv, _ := e.fly.MachineSecretsVersion(app, m.ID)
		if m.Config.Image != imageA || m.State != "started" || sv != version {
			t.Errorf("machine: image %s state %s secrets version %d, want %s started %d", m.Config.Image, m.State, sv, imageA, version)
		}
		if m.Config.Env[fly.EnvBind] != "loopback" || len(m.Config.Services) != 0 {
			t.Errorf("machine: bind %q with %d services, want loopback and none", m.Config.Env[fly.EnvBind], len(m.Config.Services))
		}
	}
	if recs := e.cf.Records(); len(recs) == 1 && recs[0].Content != tunnel.ID+".cfargotunnel.com" {
		t.Errorf("record: got %+v, want a CNAME to tunnel %s", recs[0], tunnel.ID)
	}
	id2, secret, err := d.AccessCredentials()
	toks, pols := e.cf.ServiceTokens(), e.cf.Policies()
	if err != nil || len(toks) != 1 || id2 != toks[0].ClientID || string(secret) != toks[0].ClientSecret {
		t.Errorf("kept service token: %v; it is not the one Cloudflare has", err)
	} else if len(pols) != 1 || len(pols[0].ServiceTokens) != 1 || pols[0].ServiceTokens[0] != toks[0].ID {
		t.Errorf("policy: got %+v, want one admitting only %s", pols, toks[0].ID)
	}
	st, err := p.Get(id)
	if err != nil || st.Phase != provisioner.PhaseReady {
		t.Errorf("status: phase %q error %q (%v), want ready", st.Phase, st.Error, err)
	}
}

// assertGone checks that a destroyed gateway left nothing in either fake (but moltgate's
// service token, which serves every gateway), nor in the registry or the provisioner's
// store.
func (e *env) assertGone(t *testing.T, p *provisioner.Provisioner, id string) {
	t.Helper()
	if got := e.fly.Counts(); got != (flytest.Counts{}) {
		t.Errorf("fly after destroy: got %+v, want nothing", got)
	}
	if got := e.cf.Counts(); got.Tunnels+got.Records+got.Policies+got.Apps != 0 || got.ServiceTokens > 1 {
		t.Errorf("cloudflare after destroy: got %+v, want nothing but the service token", got)
	}
	if _, ok := e.reg.Lookup(id); ok {
		t.Errorf("%s still in the registry", id)
	}
	if _, err := p.Get(id); err == nil {
		t.Errorf("%s still provisioned", id)
	}
}

func (e *env) assertNoSecret(t testing.TB, where, text string) {
	t.Helper()
	secrets := []string{flyToken, cfToken, providerKey}
	for _, tu := range e.cf.Tunnels() {
		secrets = append(secrets, e.cf.TunnelToken(tu.ID))
	}
	for _, st := range e.cf.ServiceTokens() {
		secrets = append(secrets, st.ClientSecret)
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s carries a secret value (%.8s…)", where, s)
		}
	}
}

// tenantKeys is the tenant's keystore as the provisioner reads it: one active Anthropic
// key.
type tenantKeys struct{}

func (tenantKeys) Active(tenant string) (map[string]keystore.APIKey, error) {
	if tenant != "acme" {
		return nil, nil
	}
	return map[string]keystore.APIKey{"anthropic": {ID: "key-1", Tenant: tenant, Provider: "anthropic",
		Kind: keystore.KindProviderKey, Fingerprint: "fp-1"}}, nil
}

func (tenantKeys) Open(_ context.Context, tenant, id string) (keystore.Secret, error) {
	if tenant != "acme" || id != "key-1" {
		return nil, fmt.Errorf("no key %s of %s", id, tenant)
	}
	return keystore.Secret(providerKey), nil
}
