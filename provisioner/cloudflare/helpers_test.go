package cloudflare_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudflare/cloudflare-go/v7/dns"
	"github.com/cloudflare/cloudflare-go/v7/option"
	"github.com/cloudflare/cloudflare-go/v7/zero_trust"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner/cftest"
	"github.com/moltgate/moltgate/provisioner/cloudflare"
)

const (
	testAccount = "acc-test"
	testZone    = "zone-test"
	testDomain  = "gw.example.test"
	testToken   = "cf-api-token-LEAKCHECK-7d1e3c"
	service     = "http://127.0.0.1:18789"
)

// env is a fake Cloudflare API and a driver pointed at it.
type env struct {
	fake *cftest.Server
	d    *cloudflare.Driver
	logs *logBuffer
	// secrets are values no log line or error may carry: the API token, and every tunnel
	// token and service token secret the test saw.
	mu      sync.Mutex
	secrets []string
}

// newEnv starts a fake with 3-item pages (so every listing pages) and a driver with
// test-sized timeouts; mod adjusts the driver's config. At cleanup it checks that no secret
// reached the driver's log.
func newEnv(t *testing.T, mod func(*cloudflare.Config)) *env {
	t.Helper()
	fake, err := cftest.New(cftest.Config{AccountID: testAccount, ZoneID: testZone, Zone: "example.test",
		Token: testToken, MaxPerPage: 3, DefaultPerPage: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	cfg := cloudflare.Config{
		AccountID:      testAccount,
		ZoneID:         testZone,
		GatewayDomain:  testDomain,
		APIToken:       keystore.Secret(testToken),
		BaseURL:        fake.BaseURL(),
		RequestTimeout: time.Second,
		RateLimit:      100000,
		RatePeriod:     time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	logs := &logBuffer{}
	d, err := cloudflare.New(cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{fake: fake, d: d, logs: logs, secrets: []string{testToken}}
	t.Cleanup(func() {
		e.collectSecrets()
		e.assertNoSecret(t, "log", logs.String())
	})
	return e
}

// collectSecrets adds every secret the fake holds to the scan list.
func (e *env) collectSecrets() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, tu := range e.fake.Tunnels() {
		e.secrets = append(e.secrets, e.fake.TunnelToken(tu.ID))
	}
	for _, st := range e.fake.ServiceTokens() {
		e.secrets = append(e.secrets, st.ClientSecret)
	}
}

func (e *env) assertNoSecret(t *testing.T, where, text string) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s carries a secret value (%.8s…)", where, s)
		}
	}
}

// run is the result of running every step of a gateway's edge.
type run struct {
	tunnel cloudflare.Tunnel
	token  keystore.Secret
	record cloudflare.Record
	svc    cloudflare.ServiceToken
	access cloudflare.Access
}

// ensureAll runs every step of a gateway's creation on Cloudflare, in order, as the
// provisioner core does. Errors are scanned for secrets.
func (e *env) ensureAll(t *testing.T, ctx context.Context, id string) (r run, err error) {
	t.Helper()
	defer func() {
		if err != nil {
			e.collectSecrets()
			e.assertNoSecret(t, "error", fmt.Sprintf("%v %+v", err, err))
		}
	}()
	if r.tunnel, err = e.d.EnsureTunnel(ctx, id); err != nil {
		return r, err
	}
	if err = e.d.ConfigureIngress(ctx, id, "", service); err != nil {
		return r, err
	}
	if r.token, err = e.d.TunnelToken(ctx, id); err != nil {
		return r, err
	}
	if r.record, err = e.d.EnsureDNS(ctx, id); err != nil {
		return r, err
	}
	if r.svc, err = e.d.EnsureServiceToken(ctx, "moltgate-"+id); err != nil {
		return r, err
	}
	r.access, err = e.d.EnsureAccess(ctx, id, r.svc.ID)
	return r, err
}

// assertOneOfEach checks that the fake holds exactly one tunnel, record, service token,
// policy and application, wired together as the driver makes them for gateway id.
func assertOneOfEach(t *testing.T, e *env, id string) {
	t.Helper()
	if got, want := e.fake.Counts(), (cftest.Counts{Tunnels: 1, Records: 1, ServiceTokens: 1, Policies: 1, Apps: 1}); got != want {
		t.Fatalf("counts: got %+v, want %+v", got, want)
	}
	host := id + "." + testDomain
	var tu cftest.Tunnel
	for _, x := range e.fake.Tunnels() {
		if !x.Deleted {
			tu = x
		}
	}
	if tu.Name != "mg-"+id || tu.ConfigSrc != "cloudflare" {
		t.Fatalf("tunnel: got %q config_src %q, want %q remotely managed", tu.Name, tu.ConfigSrc, "mg-"+id)
	}
	want := []cftest.IngressRule{{Hostname: host, Service: service}, {Service: "http_status:404"}}
	if !slices.EqualFunc(tu.Ingress, want, func(a, b cftest.IngressRule) bool {
		return a.Hostname == b.Hostname && a.Service == b.Service && a.Path == b.Path && len(a.OriginRequest) == 0
	}) {
		t.Fatalf("ingress: got %+v, want %+v", tu.Ingress, want)
	}
	rec := e.fake.Records()[0]
	if rec.Name != host || rec.Type != "CNAME" || rec.Content != tu.ID+".cfargotunnel.com" || !rec.Proxied {
		t.Fatalf("record: got %+v, want a proxied CNAME %s to %s.cfargotunnel.com", rec, host, tu.ID)
	}
	st := e.fake.ServiceTokens()[0]
	pol := e.fake.Policies()[0]
	if pol.Name != "mg-"+id || pol.Decision != "non_identity" || !slices.Equal(pol.ServiceTokens, []string{st.ID}) ||
		pol.OtherIncludes+pol.Excludes+pol.Requires != 0 {
		t.Fatalf("policy: got %+v, want non_identity admitting only service token %s", pol, st.ID)
	}
	app := e.fake.Apps()[0]
	if app.Domain != host || app.Type != "self_hosted" || !slices.Equal(app.Policies, []string{pol.ID}) {
		t.Fatalf("application: got %+v, want self_hosted %s with only policy %s", app, host, pol.ID)
	}
}

// raw is the SDK pointed at the fake, for a test to act behind the driver's back.
type raw struct {
	tunnels *zero_trust.TunnelCloudflaredService
	records *dns.RecordService
}

func rawClient(f *cftest.Server) raw {
	opts := []option.RequestOption{option.WithHTTPClient(&http.Client{}), option.WithBaseURL(f.BaseURL()),
		option.WithAPIToken(testToken), option.WithMaxRetries(0)}
	return raw{tunnels: zero_trust.NewTunnelCloudflaredService(opts...), records: dns.NewRecordService(opts...)}
}

// addRecord creates a record as someone else would: no driver comment.
func (r raw) addRecord(t *testing.T, name, typ, content string, proxied bool) string {
	t.Helper()
	p := dns.RecordNewParams{}
	p.ZoneID.Value, p.ZoneID.Present = testZone, true
	var b dns.RecordNewParamsBody
	b.Name.Value, b.Name.Present = name, true
	b.Type.Value, b.Type.Present = dns.RecordNewParamsBodyType(typ), true
	b.Content.Value, b.Content.Present = content, true
	b.Proxied.Value, b.Proxied.Present = proxied, true
	b.TTL.Value, b.TTL.Present = 1, true
	p.Body = b
	res, err := r.records.New(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	return res.ID
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

// newRecordUpdate overwrites a record with a proxied CNAME to content carrying comment.
func newRecordUpdate(host, content, comment string) dns.RecordUpdateParams {
	p := dns.RecordUpdateParams{}
	p.ZoneID.Value, p.ZoneID.Present = testZone, true
	b := unproxied(host, content, comment)
	b.Proxied.Value = true
	p.Body = b
	return p
}

// unproxied is a CNAME to content that Cloudflare does not proxy.
func unproxied(host, content, comment string) dns.CNAMERecordParam {
	var b dns.CNAMERecordParam
	b.Name.Value, b.Name.Present = host, true
	b.Type.Value, b.Type.Present = dns.CNAMERecordTypeCNAME, true
	b.Content.Value, b.Content.Present = content, true
	b.Proxied.Value, b.Proxied.Present = false, true
	b.TTL.Value, b.TTL.Present = 1, true
	b.Comment.Value, b.Comment.Present = comment, true
	return b
}
