package decisionlog_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/decisionlog"
	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/registry"
)

// Credentials a client could put where moltgate reads names.
const (
	gatewayToken = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	jwt          = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJl"
	botToken     = "bot-123456:AAE-secret-telegram-token"
)

type fixture struct {
	log      *decisionlog.Log
	al       *audit.FileLog
	auditDir string
	metrics  *prometheus.Registry
}

// newFixture is a Log over the real engine (gateway gw1, owner u_owner) writing to a real
// audit log.
func newFixture(t *testing.T, rate float64) *fixture {
	t.Helper()
	f := &fixture{auditDir: filepath.Join(t.TempDir(), "audit"), metrics: prometheus.NewRegistry()}
	e, err := policies.New(t.Context(), policies.Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SetGateways(t.Context(), []registry.Gateway{{ID: "gw1", Tenant: "t1", Owner: "u_owner", AuthMode: registry.AuthToken}}); err != nil {
		t.Fatal(err)
	}
	al, err := audit.OpenFile(audit.FileConfig{Dir: f.auditDir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close() })
	f.al = al
	f.log, err = decisionlog.New(decisionlog.Config{AllowSampleRate: rate}, e, al, nil, f.metrics)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// events returns the audit events written, after checking the chain and each one's schema,
// and the raw bytes of the audit files.
func (f *fixture) events(t *testing.T) ([]audit.Event, []byte) {
	t.Helper()
	if _, err := audit.VerifyDir(f.auditDir); err != nil {
		t.Fatal(err)
	}
	var out []audit.Event
	err := f.al.Query(audit.Query{}, func(e audit.Event) bool {
		if err := audit.CheckSchema(e); err != nil {
			t.Error(err)
		}
		out = append(out, e)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(f.auditDir, "events-000001.jsonl"))
	return out, data
}

func read(subject, path string) *policies.Input {
	return &policies.Input{Subject: policies.Subject{Kind: policies.SubjectUser, ID: subject}, Gateway: policies.GatewayRef{ID: "gw1", Tenant: "t1"},
		Request: policies.Request{Method: "GET", Path: path, Host: "gw1.gw.localhost"}, ClientIP: "192.0.2.7",
		Protocol: policies.ProtocolHTTP, Action: "http.read"}
}

// Issue 12: with rate 1 every allow is a policy.decision event in OPA's decision-log shape,
// named by the decision's id; refusals are left to the refusal's own event.
func TestAllowsLoggedAtRateOne(t *testing.T) {
	f := newFixture(t, 1)
	allowed, err := f.log.Decide(t.Context(), read("u_owner", "/chat"))
	if err != nil || !allowed.Allow {
		t.Fatalf("owner: %+v, %v", allowed, err)
	}
	if d, err := f.log.Decide(t.Context(), read("u_stranger", "/chat")); err != nil || d.Allow {
		t.Fatalf("stranger: %+v, %v", d, err)
	}
	evs, _ := f.events(t)
	if len(evs) != 1 {
		t.Fatalf("got %d events, want 1 (the allow)", len(evs))
	}
	e := evs[0]
	if e.Type != audit.TypePolicyDecision || e.Outcome != audit.OutcomeAllow || e.Decision == nil ||
		e.Decision.DecisionID != allowed.ID || !e.Decision.Result.Allow || e.Decision.Result.Reason != allowed.Reason ||
		e.Decision.Path != audit.DecisionPath || e.Decision.Labels["revision"] != allowed.Revision || e.PolicyRevision != allowed.Revision ||
		e.Decision.Revision != allowed.Revision || e.Decision.RequestedBy != "192.0.2.7" {
		t.Fatalf("event %+v %+v: want the allow's decision-log event", e, e.Decision)
	}
	var in policies.Input
	if err := json.Unmarshal(e.Decision.Input, &in); err != nil || in.Request.Path != "/chat" || in.Subject.ID != "u_owner" || in.ClientIP != "192.0.2.7" {
		t.Fatalf("input %s: want the policy input (%v)", e.Decision.Input, err)
	}
	if len(e.Decision.Erased) != 0 {
		t.Errorf("erased %v: want nothing", e.Decision.Erased)
	}
	if got := f.allows("logged"); got != 1 {
		t.Errorf(`allows{result="logged"}: got %v, want 1`, got)
	}
}

// Issue 12: with rate 0 no allow is written, and each is counted as sampled out.
func TestAllowsNotLoggedAtRateZero(t *testing.T) {
	f := newFixture(t, 0)
	for range 20 {
		if d, err := f.log.Decide(t.Context(), read("u_owner", "/")); err != nil || !d.Allow {
			t.Fatalf("owner: %+v, %v", d, err)
		}
	}
	if evs, _ := f.events(t); len(evs) != 0 {
		t.Fatalf("got %d events, want none", len(evs))
	}
	if got := f.allows("sampled_out"); got != 20 {
		t.Errorf(`allows{result="sampled_out"}: got %v, want 20`, got)
	}
}

// Issue 12: a credential a client smuggles into what moltgate reads (a path, a tool name,
// a configuration write's channels) never reaches the audit file: the field is erased and
// named in erased.
func TestDecisionLogMasksCredentials(t *testing.T) {
	f := newFixture(t, 1)
	owner := policies.Subject{Kind: policies.SubjectUser, ID: "u_owner", FactorAges: []int{1, 1}}
	ins := []*policies.Input{
		read("u_owner", "/files/"+gatewayToken),
		{Subject: owner, Gateway: policies.GatewayRef{ID: "gw1", Tenant: "t1"}, Protocol: policies.ProtocolWS, Action: "ws.call",
			Request: policies.Request{Method: "GET", Path: "/", Host: "gw1.gw.localhost"},
			WS:      &policies.WSMessage{Method: "config.patch", Channels: map[string]any{"telegram": map[string]any{"botToken": botToken}}}},
		{Subject: owner, Gateway: policies.GatewayRef{ID: "gw1", Tenant: "t1"}, Protocol: policies.ProtocolHTTP, Action: "tools.invoke",
			Request: policies.Request{Method: "POST", Path: "/tools/invoke", Host: "gw1.gw.localhost", Tool: "Bearer " + jwt}},
	}
	want := [][]string{{"/input/request/path"}, {"/input/ws/channels"}, {"/input/request/tool"}}
	for i, in := range ins {
		d, err := f.log.Decide(t.Context(), in)
		if err != nil || !d.Allow {
			t.Fatalf("input %d: %+v, %v; want an allow", i, d, err)
		}
	}
	evs, raw := f.events(t)
	if len(evs) != len(ins) {
		t.Fatalf("got %d events, want %d", len(evs), len(ins))
	}
	for i, e := range evs {
		if !slices.Equal(e.Decision.Erased, want[i]) {
			t.Errorf("event %d erased: got %v, want %v", i, e.Decision.Erased, want[i])
		}
	}
	for _, secret := range []string{gatewayToken, jwt, botToken, "AAE-secret"} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("the audit file holds %q", secret)
		}
	}
	if !strings.Contains(string(raw), `"erased":["/input/ws/channels"]`) {
		t.Errorf("no event lists the erased channels")
	}
}

// allows is moltgate_policy_decision_log_allows_total{result}.
func (f *fixture) allows(result string) float64 {
	mfs, _ := f.metrics.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "moltgate_policy_decision_log_allows_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// Issue 12: a rate outside 0..1 is refused.
func TestBadRate(t *testing.T) {
	e, err := policies.New(t.Context(), policies.Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	al, err := audit.OpenFile(audit.FileConfig{Dir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close() })
	for _, r := range []float64{-0.1, 1.5} {
		if _, err := decisionlog.New(decisionlog.Config{AllowSampleRate: r}, e, al, nil, nil); err == nil {
			t.Errorf("rate %v: accepted", r)
		}
	}
}
