package cloud_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/cloudflare/cloudflare-go/v7/dns"
	"github.com/cloudflare/cloudflare-go/v7/option"
	"github.com/prometheus/client_golang/prometheus"
	flyapi "github.com/superfly/fly-go"
	"github.com/superfly/fly-go/flaps"
	"github.com/superfly/fly-go/tokens"

	"github.com/moltgate/moltgate/provisioner"
	"github.com/moltgate/moltgate/provisioner/provisionertest"
)

const otherTunnel = "99999999-0000-4000-8000-000000000099.cfargotunnel.com"

// Issue 14: a DNS record changed to point at another tunnel and a machine changed to
// another image behind moltgate's back are found by the reconciler's next pass, counted,
// shown in the status, and put back.
func TestDriftFoundAndRepaired(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	p, d := e.process(func(_ *provisioner.Config, deps *provisioner.Deps) { deps.Metrics = reg })
	provisionertest.Provisioned(t, p, spec("gw1"))

	rec := e.cf.Records()[0]
	setRecord(t, e, rec.ID, rec.Name, otherTunnel, rec.Comment)
	m := e.fly.Machines("mg-gw1")[0]
	cfg := m.Config
	cfg.Image = imageB
	if _, err := rawFly(t, e).Update(t.Context(), "mg-gw1", flyapi.LaunchMachineInput{ID: m.ID, Name: m.Name, Region: m.Region, Config: cfg}, ""); err != nil {
		t.Fatal(err)
	}

	provisionertest.Converge(t, p, "gw1")
	for _, kind := range []string{"dns", "image"} {
		if got := driftFound(t, reg, kind); got != 1 {
			t.Errorf("moltgate_provisioner_drift_found_total{kind=%q}: got %v, want 1", kind, got)
		}
	}
	st, err := p.Get("gw1")
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]provisioner.Drift{}
	for _, dr := range st.Drift {
		found[dr.Kind] = dr
	}
	if dr := found["dns"]; dr.Step != "cloudflare.dns" || !strings.Contains(dr.Detail, otherTunnel) || dr.Repaired.IsZero() {
		t.Errorf("dns drift in the status: got %+v, want found naming %s and repaired", dr, otherTunnel)
	}
	if dr := found["image"]; dr.Step != "fly.machine" || !strings.Contains(dr.Detail, imageB) || dr.Repaired.IsZero() {
		t.Errorf("image drift in the status: got %+v, want found naming %s and repaired", dr, imageB)
	}
	e.assertOneOfEach(t, p, d, "gw1")
}

// Issue 14: a record on the gateway's hostname that is not moltgate's, pointing at another
// tunnel, is reported, not touched: the pass fails naming it, and the status shows it.
func TestForeignRecordOnAnotherTunnelIsReported(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	p, _ := e.process(func(_ *provisioner.Config, deps *provisioner.Deps) { deps.Metrics = reg })
	provisionertest.Provisioned(t, p, spec("gw1"))
	rec := e.cf.Records()[0]
	setRecord(t, e, rec.ID, rec.Name, otherTunnel, "someone else's")

	err := p.Reconcile(t.Context(), "gw1")
	if err == nil || !strings.Contains(err.Error(), otherTunnel) {
		t.Fatalf("pass: got %v, want a failure naming %s", err, otherTunnel)
	}
	if recs := e.cf.Records(); len(recs) != 1 || recs[0].Content != otherTunnel {
		t.Errorf("records: got %+v, want the foreign record left alone", recs)
	}
	st, _ := p.Get("gw1")
	if len(st.Drift) != 1 || st.Drift[0].Kind != "dns" || !st.Drift[0].Repaired.IsZero() || st.Phase == provisioner.PhaseReady {
		t.Errorf("status: phase %s drift %+v, want one unrepaired dns drift and not ready", st.Phase, st.Drift)
	}
	if err := p.Reconcile(t.Context(), "gw1"); err == nil {
		t.Fatal("second pass: the foreign record went unreported")
	}
	if got := driftFound(t, reg, "dns"); got != 1 {
		t.Errorf("drift found after two passes: got %v, want 1 (the same finding counts once)", got)
	}
}

// driftFound is moltgate_provisioner_drift_found_total{driver="fly",kind=kind} in reg.
func driftFound(t *testing.T, reg *prometheus.Registry, kind string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "moltgate_provisioner_drift_found_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["driver"] == "fly" && labels["kind"] == kind {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// setRecord overwrites a DNS record through the SDK, as someone in the dashboard would.
func setRecord(t *testing.T, e *env, id, host, content, comment string) {
	t.Helper()
	records := dns.NewRecordService(option.WithHTTPClient(&http.Client{}), option.WithBaseURL(e.cf.BaseURL()),
		option.WithAPIToken(cfToken), option.WithMaxRetries(0))
	var b dns.CNAMERecordParam
	b.Name.Value, b.Name.Present = host, true
	b.Type.Value, b.Type.Present = dns.CNAMERecordTypeCNAME, true
	b.Content.Value, b.Content.Present = content, true
	b.Proxied.Value, b.Proxied.Present = true, true
	b.TTL.Value, b.TTL.Present = 1, true
	b.Comment.Value, b.Comment.Present = comment, true
	p := dns.RecordUpdateParams{}
	p.ZoneID.Value, p.ZoneID.Present = "zone-test", true
	p.Body = b
	if _, err := records.Update(t.Context(), id, p); err != nil {
		t.Fatal(err)
	}
}

// rawFly is a flaps client of the fake, for a test to act behind moltgate's back.
func rawFly(t *testing.T, e *env) *flaps.Client {
	t.Helper()
	c, err := flaps.NewWithOptions(t.Context(), flaps.NewClientOpts{Tokens: tokens.Parse(flyToken), Transport: e.fly.Transport()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
