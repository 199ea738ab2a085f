package policies

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/registry"
)

// writeSet writes files into a new directory; with defaults, a copy of the embedded set
// (policies and data files, no tests) first, less the files named in drop.
func writeSet(t *testing.T, defaults bool, drop []string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if defaults {
		names, err := fs.Glob(Default(), "*")
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			if strings.Contains(name, "_test.") || name == "schemas" || strings.Contains(strings.Join(drop, " "), name) {
				continue
			}
			b, err := fs.ReadFile(Default(), name)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Issue 12: a copy of the default rules without the data they read is refused at load,
// naming what is missing, instead of losing the refusals that data drives (fail open).
func TestSetWithoutDataTheRulesReadIsRefused(t *testing.T) {
	t.Parallel()
	tests := []struct {
		drop string
		want []string
	}{
		{"http.json", []string{"data.http.owner_only_tools", "data.http.admin_prefixes", "data.http.owner_prefixes"}},
		{"ws.json", []string{"data.ws.owner_tools", "data.ws.owner_prefixes", "data.ws.families"}},
		{"roles.json", []string{"data.roles"}},
	}
	for _, tt := range tests {
		t.Run(tt.drop, func(t *testing.T) {
			t.Parallel()
			_, err := New(t.Context(), Config{Dir: writeSet(t, true, []string{tt.drop}, nil)}, nil, nil)
			if !errors.Is(err, ErrMissingData) {
				t.Fatalf("got %v, want ErrMissingData", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w+": read at ") {
					t.Errorf("error does not name %s: %v", w, err)
				}
			}
		})
	}
	// The complete copy loads.
	if _, err := New(t.Context(), Config{Dir: writeSet(t, true, nil, nil)}, nil, nil); err != nil {
		t.Fatalf("complete copy: %v", err)
	}
}

// extensionEngine is an engine over a directory of moltgate.custom files only, with gateway
// gw1 (owner u_owner, viewer u_viewer).
func extensionEngine(t *testing.T, files map[string]string) *Engine {
	t.Helper()
	e, err := New(t.Context(), Config{Dir: writeSet(t, false, nil, files)}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = e.SetGateways(t.Context(), []registry.Gateway{{ID: "gw1", Owner: "u_owner", AuthMode: registry.AuthToken,
		Members: map[string]string{"u_viewer": "viewer"}}})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func owner(action string) *Input {
	return &Input{Subject: Subject{Kind: SubjectUser, ID: "u_owner"}, Gateway: GatewayRef{ID: "gw1"},
		Request: Request{Method: "GET", Path: "/"}, Protocol: ProtocolHTTP, Action: action}
}

// Issue 12: a directory of moltgate.custom files extends the embedded defaults; its denies
// bind owners, gateway tokens and WebSocket messages; a custom file trying to allow what a
// default refuses changes nothing.
func TestExtensionDirectory(t *testing.T) {
	t.Parallel()
	e := extensionEngine(t, map[string]string{
		"custom.rego": `package moltgate.custom

deny contains {"reason": "tool_banned", "status": 403} if input.request.tool == "web_fetch"

deny contains {"reason": "tool_banned", "status": 403} if input.ws.tool == "web_fetch"

# Attempts to allow: the engine reads none of these.
decision := {"allow": true, "reason": "custom"}

allow := true

scopes := ["operator.read", "operator.write", "operator.admin", "operator.root"]
`,
		"custom_test.rego": "package moltgate.custom_test\n\ntest_loads if true\n",
	})
	token := func(action string) *Input {
		in := owner(action)
		in.Subject = Subject{Kind: SubjectGatewayToken, ID: "token:gw1", Gateway: "gw1"}
		return in
	}
	viewer := owner("http.write")
	viewer.Subject.ID = "u_viewer"
	invoke := owner("tools.invoke")
	invoke.Request.Tool = "web_fetch"
	tokenInvoke := token("tools.invoke")
	tokenInvoke.Request.Tool = "web_fetch"
	ws := owner("ws.call")
	ws.Protocol, ws.WS = ProtocolWS, &WSMessage{Method: "tools.invoke", Tool: "web_fetch"}
	wsOther := owner("ws.call")
	wsOther.Protocol, wsOther.WS = ProtocolWS, &WSMessage{Method: "tools.invoke", Tool: "web_search"}
	tests := []struct {
		name   string
		in     *Input
		allow  bool
		reason string
	}{
		{"owner banned tool", invoke, false, "tool_banned"},
		{"token banned tool", tokenInvoke, false, "tool_banned"},
		{"socket banned tool", ws, false, "tool_banned"},
		{"socket other tool", wsOther, true, "operate"},
		{"owner read", owner("http.read"), true, "owner"},
		{"viewer write stays refused", viewer, false, "role_forbids"},
	}
	for _, tt := range tests {
		d, err := e.Decide(t.Context(), tt.in)
		if err != nil || d.Allow != tt.allow || d.Reason != tt.reason {
			t.Errorf("%s: got %+v, %v; want allow=%v reason=%s", tt.name, d, err, tt.allow, tt.reason)
		}
	}
	// The scopes the custom file lists are an upper bound: nothing is added.
	d, _ := e.Decide(t.Context(), owner("http.read"))
	if strings.Join(d.Scopes, ",") != "operator.read,operator.write,operator.admin" {
		t.Errorf("owner scopes: got %v, want the three operator scopes", d.Scopes)
	}
	// Its tests run together with the defaults'.
	results, err := RunTests(t.Context(), os.DirFS(writeSet(t, false, nil, map[string]string{
		"custom_test.rego": "package moltgate.custom_test\n\ntest_loads if true\n"})))
	if err != nil || len(results) != 1 || results[0].Name != "test_loads" || !results[0].Pass {
		t.Fatalf("got %v, %v; want the extension's one passing test", results, err)
	}
}

// An extension may not redefine the default data documents.
func TestExtensionCannotRedefineDefaultData(t *testing.T) {
	t.Parallel()
	dir := writeSet(t, false, nil, map[string]string{
		"custom.rego": "package moltgate.custom\n",
		"roles.json":  `{"roles": {"viewer": {"actions": ["http.write"]}}}`,
	})
	if _, err := New(t.Context(), Config{Dir: dir}, nil, nil); err == nil || !strings.Contains(err.Error(), "data.roles") {
		t.Fatalf("got %v, want a refusal naming data.roles", err)
	}
}

// Issue 12: an absent or empty moltgate.custom costs nothing per decision: with the embedded
// rules the engine then queries default_decision, which is what the merge would return; any
// custom rule, or a set replacing the defaults, is decided through the merge.
func TestExtensionQuery(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		dir  string
		want string
	}{
		{"embedded", "", defaultDecisionQuery},
		{"empty extension", writeSet(t, false, nil, map[string]string{"custom.rego": "package moltgate.custom\n"}), defaultDecisionQuery},
		{"extension with a rule", writeSet(t, false, nil, map[string]string{"custom.rego": "package moltgate.custom\n\ndeny contains {\"reason\": \"x\"} if input.action == \"nope\"\n"}), DecisionQuery},
		{"copy of the defaults", writeSet(t, true, nil, nil), DecisionQuery},
		{"replacement", "../deploy/policy-examples/tenant-keys", DecisionQuery},
	}
	for _, tt := range tests {
		e, err := New(t.Context(), Config{Dir: tt.dir}, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := e.cur.Load().queried; got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.name, got, tt.want)
		}
	}
}
