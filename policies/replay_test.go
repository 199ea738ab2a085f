package policies

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/registry"
)

// Issue 12: `policy test DIR` replays the decisions recorded in DIR/testdata/replay; an
// outcome that changes fails, naming the record, unless expected_changes.txt lists it.
// Records are written as the live set decided them, in the replay shape and as audit
// decision events (OPA's decision-log fields), which drop in as they are.
func TestReplay(t *testing.T) {
	ctx := t.Context()
	gw := registry.Gateway{ID: "gw1", Tenant: "t1", Owner: "owner", AuthMode: registry.AuthToken}
	live := newTestEngine(t, Config{}, &table{Gateways: []registry.Gateway{gw}})
	get := func(user, path string) Input {
		return Input{Subject: Subject{Kind: SubjectUser, ID: user}, Gateway: GatewayRef{ID: "gw1"},
			Request: Request{Method: "GET", Path: path, Host: "gw1.gw.example.test"}, Protocol: ProtocolHTTP, Action: "http.read"}
	}
	var lines []string
	for _, c := range []struct {
		id string
		in Input
	}{{"d1", get("owner", "/")}, {"d2", get("owner", "/retired")}, {"d3", get("mallory", "/retired")}} {
		d, err := live.Decide(ctx, &c.in)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(map[string]any{"decision_id": c.id, "input": c.in, "result": d,
			"data": ReplayData{Gateways: []registry.Gateway{gw}}})
		lines = append(lines, string(b))
	}
	// An audit event: its input is the recorded subset, its data the directory's data.json.
	auditIn := Input{Subject: Subject{Kind: SubjectUser, ID: "mallory"}, Gateway: GatewayRef{ID: "gw1", Tenant: "t1"},
		Request: Request{Method: "GET"}, Protocol: "", Action: "http.read"}
	d4, err := live.Decide(ctx, &auditIn)
	if err != nil {
		t.Fatal(err)
	}
	ev, _ := json.Marshal(audit.Event{Type: audit.TypePolicyDeny, Outcome: audit.OutcomeDeny, Decision: &audit.Decision{
		DecisionID: "d4", Path: audit.DecisionPath,
		Input:  mustJSON(t, audit.DecisionInput{Subject: audit.Actor{Kind: SubjectUser, ID: "mallory"}, Gateway: audit.DecisionGWRef{ID: "gw1", Tenant: "t1"}, Action: "http.read", Method: "GET"}),
		Result: audit.DecisionResult{Allow: d4.Allow, Reason: d4.Reason}}})
	data, _ := json.Marshal(ReplayData{Gateways: []registry.Gateway{gw}})

	dir := writeSet(t, false, nil, map[string]string{"retire.rego": retireRoute(t)})
	replay := filepath.Join(dir, filepath.FromSlash(ReplayDir))
	write := func(name, body string) {
		t.Helper()
		if err := os.MkdirAll(replay, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(replay, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("recorded.jsonl", strings.Join(lines, "\n")+"\n")
	write("audit.jsonl", string(ev)+"\n")
	write("data.json", string(data))

	rep, err := Replay(ctx, dir)
	if !errors.Is(err, ErrReplayChanged) || !strings.Contains(err.Error(), "d2 (recorded.jsonl:2)") {
		t.Fatalf("replay with d2 changed: got %v, want ErrReplayChanged naming d2", err)
	}
	for _, other := range []string{"d1", "d3", "d4"} {
		if strings.Contains(err.Error(), other) {
			t.Errorf("replay error names %s, which did not change: %v", other, err)
		}
	}
	if len(rep.Results) != 4 {
		t.Errorf("replayed %d records, want 4", len(rep.Results))
	}

	write("expected_changes.txt", "# the candidate retires /retired\nd2\n")
	rep, err = Replay(ctx, dir)
	if err != nil {
		t.Fatalf("replay with d2 listed: %v", err)
	}
	for _, r := range rep.Results {
		if r.Changed != (r.Name == "d2") || r.Expected != (r.Name == "d2") {
			t.Errorf("%s: changed %v, expected %v; want only d2 changed, as listed", r.Name, r.Changed, r.Expected)
		}
	}

	write("expected_changes.txt", "d2\nd9\n")
	if _, err := Replay(ctx, dir); !errors.Is(err, ErrReplayChanged) || !strings.Contains(err.Error(), "d9") {
		t.Errorf("expected_changes.txt naming an absent record: got %v, want it named", err)
	}

	write("bad.json", `{"decision_id": "d5", "input": {"action": "http.read", "request": {"toool": "x"}}, "result": {"allow": true}}`)
	if _, err := Replay(ctx, dir); err == nil || !strings.Contains(err.Error(), "bad.json:1") || !strings.Contains(err.Error(), "toool") {
		t.Errorf("a record with an unknown input field: got %v, want an error naming bad.json:1 and the field", err)
	}
}

// mustJSON is v encoded.
func mustJSON(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
