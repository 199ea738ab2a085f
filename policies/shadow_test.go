package policies

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moltgate/moltgate/registry"
)

// retireRoute is a candidate set that retires /retired and allows nothing new.
func retireRoute(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "deploy", "policy-examples", "retire-route", "retire.rego"))
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// Issue 12: shadow mode reports exactly the requests whose decision the candidate changes,
// checked against a known set, while the live decision is the one returned.
func TestShadowReportsExactlyTheDifferences(t *testing.T) {
	var mu sync.Mutex
	var diffs []ShadowDifference
	cand := writeSet(t, false, nil, map[string]string{"retire.rego": retireRoute(t)})
	reg := prometheus.NewRegistry()
	e, err := New(t.Context(), Config{ShadowDir: cand, ShadowReport: func(d ShadowDifference) {
		mu.Lock()
		defer mu.Unlock()
		diffs = append(diffs, d)
	}}, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	// Gateways arrive after the candidate is loaded: the candidate must see them too.
	gw := registry.Gateway{ID: "gw1", Tenant: "t1", Owner: "owner", AuthMode: registry.AuthToken,
		Members: map[string]string{"vera": registry.RoleViewer}}
	if err := e.SetGateways(t.Context(), []registry.Gateway{gw}); err != nil {
		t.Fatal(err)
	}
	req := func(name, user, method, path, action string) (string, Input) {
		return name, Input{Subject: Subject{Kind: SubjectUser, ID: user}, Gateway: GatewayRef{ID: "gw1"},
			Request: Request{Method: method, Path: path, Host: "gw1.gw.example.test"}, ClientIP: "203.0.113.9",
			Protocol: ProtocolHTTP, Action: action}
	}
	type named struct {
		name string
		in   Input
	}
	var ins []named
	for _, r := range [][5]string{
		{"owner reads /", "owner", "GET", "/", "http.read"},
		{"owner reads /retired", "owner", "GET", "/retired", "http.read"},
		{"owner writes /retired", "owner", "POST", "/retired", "http.write"},
		{"viewer reads /retired", "vera", "GET", "/retired", "http.read"},
		{"viewer reads /kept", "vera", "GET", "/kept", "http.read"},
		{"viewer writes /retired", "vera", "POST", "/retired", "http.write"}, // refused by both, for the same reason
		{"stranger reads /retired", "mallory", "GET", "/retired", "http.read"},
		{"owner reads /retired/x", "owner", "GET", "/retired/x", "http.read"},
	} {
		n, in := req(r[0], r[1], r[2], r[3], r[4])
		ins = append(ins, named{n, in})
	}
	want := []string{"/retired", "/retired", "/retired"} // owner GET, owner POST, viewer GET
	for _, in := range ins {
		live, err := e.Decide(t.Context(), &in.in)
		if err != nil {
			t.Fatalf("%s: %v", in.name, err)
		}
		if in.name == "owner reads /retired" && !live.Allow {
			t.Fatalf("%s: got %+v: the live set decides, and it allows", in.name, live)
		}
	}
	e.WaitShadow()

	var got []string
	for _, d := range diffs {
		req := d.Input["request"].(map[string]any)
		got = append(got, req["path"].(string))
		if !d.Live.Allow || d.Candidate.Allow || d.Candidate.Reason != "route_retired" || d.Candidate.Status != 410 {
			t.Errorf("%v: got live %+v, candidate %+v; want live allowed, candidate route_retired 410", req, d.Live, d.Candidate)
		}
		if d.LiveRevision != e.Revision() || d.CandidateRevision != e.ShadowRevision() || d.LiveRevision == d.CandidateRevision {
			t.Errorf("revisions: got live %q, candidate %q; want %q, %q", d.LiveRevision, d.CandidateRevision, e.Revision(), e.ShadowRevision())
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("differences: got %q, want %q", got, want)
	}
	if got := testutil.ToFloat64(e.shadow.differs); got != float64(len(want)) {
		t.Errorf(`moltgate_policy_shadow_decisions_total{outcome="differs"}: got %v, want %d`, got, len(want))
	}
	if got := testutil.ToFloat64(e.shadow.same); got != float64(len(ins)-len(want)) {
		t.Errorf(`moltgate_policy_shadow_decisions_total{outcome="same"}: got %v, want %d`, got, len(ins)-len(want))
	}
	wantInfo := `
# HELP moltgate_policy_active_revision_info The policy revision this replica enforces (set="live") and the candidate it shadows (set="candidate"), as a label; the value is 1.
# TYPE moltgate_policy_active_revision_info gauge
moltgate_policy_active_revision_info{revision="` + e.ShadowRevision() + `",set="candidate"} 1
moltgate_policy_active_revision_info{revision="` + e.Revision() + `",set="live"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(wantInfo), "moltgate_policy_active_revision_info"); err != nil {
		t.Error(err)
	}
}

// A candidate that fails the gate is refused at start, and on reload the previous
// candidate keeps shadowing.
func TestShadowCandidateIsGated(t *testing.T) {
	broken := map[string]string{"retire.rego": "package moltgate.custom\n\ndeny contains x if {\n"}
	if _, err := New(t.Context(), Config{ShadowDir: writeSet(t, false, nil, broken)}, nil, nil); err == nil {
		t.Fatal("New with a candidate that does not compile: got nil error")
	}
	dir := writeSet(t, false, nil, map[string]string{"retire.rego": retireRoute(t)})
	e := newTestEngine(t, Config{ShadowDir: dir}, nil)
	t.Cleanup(e.Close)
	rev := e.ShadowRevision()
	failing := "package moltgate.custom_test\n\ntest_fails if {\n\tfalse\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "retire_test.rego"), []byte(failing), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.ReloadShadow(t.Context()); err == nil || e.ShadowRefusal() == nil {
		t.Fatalf("ReloadShadow with a failing test: got %v, want a refusal", err)
	}
	if got := e.ShadowRevision(); got != rev {
		t.Errorf("candidate revision after a refused reload: got %s, want %s", got, rev)
	}
}

func toJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The candidate directory is watched as the live one is: an edit of it is shadowing once it
// passes the gate.
func TestShadowWatched(t *testing.T) {
	dir := writeSet(t, false, nil, map[string]string{"retire.rego": retireRoute(t)})
	e := newTestEngine(t, Config{ShadowDir: dir}, nil)
	t.Cleanup(e.Close)
	first := e.ShadowRevision()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	reloads := make(chan error, 64)
	go func() { done <- e.Watch(ctx, func(err error) { reloads <- err }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	edited := strings.Replace(retireRoute(t), `"/retired"`, `"/gone"`, 1)
	// The watcher may not be watching yet when the file is first written: write until a
	// reload takes the edit.
	deadline := time.Now().Add(10 * time.Second)
	for e.ShadowRevision() == first {
		if time.Now().After(deadline) {
			t.Fatalf("candidate revision still %s 10s after its directory changed", first)
		}
		if err := os.WriteFile(filepath.Join(dir, "retire.rego"), []byte(edited), 0o600); err != nil {
			t.Fatal(err)
		}
		select {
		case <-reloads:
		case <-time.After(time.Second):
		}
	}
	if e.ShadowRefusal() != nil {
		t.Errorf("candidate refusal after a good edit: %v", e.ShadowRefusal().Err)
	}
}

// A refused candidate's error says "policies: " once, then where it failed.
func TestShadowRefusalReadsOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bad.rego"), []byte("package moltgate.custom\n\ndeny contains x if {\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(t.Context(), Config{ShadowDir: dir}, nil, nil)
	if err == nil {
		t.Fatal("got no error for a candidate that does not parse")
	}
	if msg := err.Error(); strings.Count(msg, "policies: ") != 1 || !strings.Contains(msg, "bad.rego") {
		t.Fatalf("got %q, want one \"policies: \" and the file's name", msg)
	}
}
