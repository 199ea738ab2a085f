package cloudflare_test

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/cloudflare/cloudflare-go/v7/zero_trust"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner/cftest"
	"github.com/moltgate/moltgate/provisioner/cloudflare"
)

// Issue 14: a DNS record of the gateway's hostname that points at another tunnel and is
// not the driver's is drift: reported by EnsureDNS and Drift, and left alone. Once marked as
// the driver's, the same record is repaired.
func TestDNSRecordOnAnotherTunnelIsDrift(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := t.Context()
	host := "acme-5." + testDomain
	tu, err := e.d.EnsureTunnel(ctx, "acme-5")
	if err != nil {
		t.Fatal(err)
	}
	other := "99999999-0000-4000-8000-000000000099.cfargotunnel.com"
	rawClient(e.fake).addRecord(t, host, "CNAME", other, true)

	_, err = e.d.EnsureDNS(ctx, "acme-5")
	var de *cloudflare.DriftError
	if !errors.Is(err, cloudflare.ErrDrift) || !errors.As(err, &de) || de.Findings[0].Resource != "dns" || !strings.Contains(de.Findings[0].Got, other) {
		t.Fatalf("ensure dns: got %v, want a dns drift naming %s", err, other)
	}
	if recs := e.fake.Records(); len(recs) != 1 || recs[0].Content != other {
		t.Fatalf("records: got %+v, want the foreign record untouched", recs)
	}
	findings, err := e.d.Drift(ctx, "acme-5")
	if err != nil {
		t.Fatal(err)
	}
	if !hasFinding(findings, "dns", other) {
		t.Fatalf("drift: got %v, want a dns finding naming %s", findings, other)
	}
	if err := e.d.Destroy(ctx, "acme-5"); err != nil {
		t.Fatal(err)
	}
	if recs := e.fake.Records(); len(recs) != 1 {
		t.Fatalf("destroy: got %d records, want the foreign one left", len(recs))
	}

	// The driver's own record, pointing at an old tunnel, is repointed.
	e2 := newEnv(t, nil)
	tu, err = e2.d.EnsureTunnel(ctx, "acme-5")
	if err != nil {
		t.Fatal(err)
	}
	id := rawClient(e2.fake).addRecord(t, host, "CNAME", other, false)
	setComment(t, e2, id, host, other, "moltgate gateway acme-5")
	rec, err := e2.d.EnsureDNS(ctx, "acme-5")
	if err != nil {
		t.Fatal(err)
	}
	if want := tu.ID + ".cfargotunnel.com"; rec.Content != want || !rec.Proxied || e2.fake.Records()[0].Content != want {
		t.Fatalf("repaired record: got %+v, want a proxied CNAME to %s", rec, want)
	}
}

func hasFinding(fs []cloudflare.Finding, resource, got string) bool {
	for _, f := range fs {
		if f.Resource == resource && strings.Contains(f.Got, got) {
			return true
		}
	}
	return false
}

// setComment overwrites record id with a comment, through the raw SDK.
func setComment(t *testing.T, e *env, id, host, content, comment string) {
	t.Helper()
	c := rawClient(e.fake)
	p := newRecordUpdate(host, content, comment)
	if _, err := c.records.Update(t.Context(), id, p); err != nil {
		t.Fatal(err)
	}
}

// Issue 14: Drift sees an ingress and a record changed behind the driver's back, and the
// ensures put them back.
func TestDriftSeesIngressAndDNSAndEnsuresRepair(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := t.Context()
	r, err := e.ensureAll(t, ctx, "acme-6")
	if err != nil {
		t.Fatal(err)
	}
	host := "acme-6." + testDomain
	c := rawClient(e.fake)
	p := zero_trust.TunnelCloudflaredConfigurationUpdateParams{}
	p.AccountID.Value, p.AccountID.Present = testAccount, true
	var route, last zero_trust.TunnelCloudflaredConfigurationUpdateParamsConfigIngress
	route.Hostname.Value, route.Hostname.Present = host, true
	route.Service.Value, route.Service.Present = "http://10.0.0.5:22", true
	last.Service.Value, last.Service.Present = "http_status:404", true
	var cfg zero_trust.TunnelCloudflaredConfigurationUpdateParamsConfig
	cfg.Ingress.Value, cfg.Ingress.Present = []zero_trust.TunnelCloudflaredConfigurationUpdateParamsConfigIngress{route, last}, true
	p.Config.Value, p.Config.Present = cfg, true
	if _, err := c.tunnels.Configurations.Update(ctx, r.tunnel.ID, p); err != nil {
		t.Fatal(err)
	}
	upd := newRecordUpdate(host, r.record.Content, "moltgate gateway acme-6")
	upd.Body = unproxied(host, r.record.Content, "moltgate gateway acme-6")
	if _, err := c.records.Update(ctx, r.record.ID, upd); err != nil {
		t.Fatal(err)
	}
	findings, err := e.d.Drift(ctx, "acme-6")
	if err != nil {
		t.Fatal(err)
	}
	if !hasFinding(findings, "ingress", "10.0.0.5") || !hasFinding(findings, "dns", "not proxied") || len(findings) != 2 {
		t.Fatalf("drift: got %v, want the ingress and the unproxied record", findings)
	}
	if err := e.d.ConfigureIngress(ctx, "acme-6", "", service); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.EnsureDNS(ctx, "acme-6"); err != nil {
		t.Fatal(err)
	}
	if findings, err := e.d.Drift(ctx, "acme-6"); err != nil || len(findings) != 0 {
		t.Fatalf("drift after repair: got %v, %v; want none", findings, err)
	}
	assertOneOfEach(t, e, "acme-6")
}

// Issue 14: Destroy after a create that stopped at any step, then DeleteServiceToken,
// leaves the fake empty; a second Destroy is a no-op.
func TestDestroyAfterHalfFinishedCreateLeavesNothing(t *testing.T) {
	t.Parallel()
	for _, stop := range []cftest.Route{cftest.RouteCreateTunnel, cftest.RoutePutTunnelConfig, cftest.RouteCreateRecord,
		cftest.RouteCreateServiceToken, cftest.RouteCreatePolicy, cftest.RouteCreateApp, ""} {
		t.Run("stopped at "+string(stop), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, nil)
			ctx := t.Context()
			if stop != "" {
				// The create happens, its answer is lost, and nothing resolves it: the
				// crash the core recovers from by destroying.
				e.fake.Inject(stop, cftest.Fault{Kind: cftest.FailAfter, Status: 400})
			}
			_, _ = e.ensureAll(t, ctx, "acme-7")
			for range 2 {
				if err := e.d.Destroy(ctx, "acme-7"); err != nil {
					t.Fatal(err)
				}
			}
			if err := e.d.DeleteServiceToken(ctx, "moltgate-acme-7"); err != nil {
				t.Fatal(err)
			}
			if got := e.fake.Counts(); got != (cftest.Counts{}) {
				t.Fatalf("after destroy: got %+v, want nothing", got)
			}
			if f, err := e.d.Drift(ctx, "acme-7"); err != nil || len(f) != 1 || f[0].Resource != "tunnel" {
				t.Fatalf("drift after destroy: got %v, %v; want only the missing tunnel", f, err)
			}
		})
	}
}

// Issue 14: no secret reaches an error or a log line: not the API token, the tunnel token
// or a service token secret, neither in the driver's errors (whatever fails) nor in how
// its results print. Errors carry status and codes, never the SDK's text (URL, raw body).
func TestSecretsNeverInErrorsOrLogs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := t.Context()
	r, err := e.ensureAll(t, ctx, "acme-8")
	if err != nil {
		t.Fatal(err)
	}
	e.collectSecrets()
	if len(r.token) == 0 || len(r.svc.ClientSecret) == 0 {
		t.Fatal("no secrets to look for")
	}
	var texts []string
	texts = append(texts, fmt.Sprintf("%v %+v %#v", r, r, r), fmt.Sprint(r.token), fmt.Sprint(r.svc))
	log := slog.New(slog.NewJSONHandler(e.logs, nil))
	log.Info("result", "svc", r.svc, "token", r.token)
	for _, route := range []cftest.Route{cftest.RouteGetTunnelToken, cftest.RouteCreateServiceToken, cftest.RouteListTunnels} {
		e.fake.Inject(route, cftest.Fault{Kind: cftest.Fail, Status: 400, Times: -1})
	}
	_, err1 := e.d.TunnelToken(ctx, "acme-8")
	_, err2 := e.d.EnsureServiceToken(ctx, "another")
	_, err3 := e.d.EnsureTunnel(ctx, "acme-8")
	for _, err := range []error{err1, err2, err3} {
		if err == nil {
			t.Fatal("a faulted call succeeded")
		}
		s := fmt.Sprintf("%v %+v", err, err)
		texts = append(texts, s)
		if strings.Contains(s, "client/v4") || strings.Contains(s, "injected") || strings.Contains(s, e.fake.URL) {
			t.Errorf("error carries the SDK's text (URL or body): %s", s)
		}
		if !strings.Contains(s, "status 400") {
			t.Errorf("error %q: want the status", s)
		}
	}
	e.fake.ClearFaults()
	for _, s := range texts {
		e.assertNoSecret(t, "output", s)
	}
	if s := fmt.Sprintf("%+v", cloudflare.Config{APIToken: keystore.Secret(testToken)}); strings.Contains(s, testToken) {
		t.Error("config prints the API token")
	}
}
