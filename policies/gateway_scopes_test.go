package policies

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/registry"
)

// The WebSocket policy must never be looser than the gateway it guards: a method the default
// policy lets a viewer or an operator call must be one the real OpenClaw gateway (the pinned
// version in .cache/openclaw) serves with the operator scopes that role is given upstream
// (roles.json). The gateway's own table of every core method's scope is read with its own
// code (testdata/openclaw_scopes.mjs). Without this, a method the policy classes as a read
// but the gateway reserves for admins is allowed by moltgate and refused, or worse, served,
// depending on the gateway's configuration.
func TestWSClassesNoLooserThanGatewayScopes(t *testing.T) {
	dir := testenv.OpenClawDir(t)
	out, err := exec.Command(filepath.Join(dir, "node_modules", ".bin", "node"), "testdata/openclaw_scopes.mjs", dir).Output()
	if err != nil {
		t.Fatalf("reading the gateway's method scopes: %v", err)
	}
	var required map[string][]string
	if err := json.Unmarshal(out, &required); err != nil {
		t.Fatal(err)
	}
	if len(required) < 400 {
		t.Fatalf("the gateway's table names %d methods, want its ~480 core methods", len(required))
	}

	ctx := context.Background()
	// A generous limit: this checks what is decided, and must not fail on a starved machine.
	e := newTestEngine(t, Config{Timeout: 10 * time.Second}, nil)
	if err := e.SetGateways(ctx, []registry.Gateway{{ID: "g", Tenant: "t", Owner: "u_owner", AuthMode: registry.AuthToken,
		Members: map[string]string{"u_viewer": registry.RoleViewer, "u_operator": registry.RoleOperator}}}); err != nil {
		t.Fatal(err)
	}
	var roles struct {
		Roles map[string]struct{ Scopes []string } `json:"roles"`
	}
	raw, err := os.ReadFile("roles.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &roles); err != nil {
		t.Fatal(err)
	}
	grants := map[string][]string{ // what each role is given upstream
		"u_viewer":   roles.Roles[registry.RoleViewer].Scopes,
		"u_operator": roles.Roles[registry.RoleOperator].Scopes,
	}
	methods := make([]string, 0, len(required))
	for m := range required {
		methods = append(methods, m)
	}
	sort.Strings(methods)
	allowed := map[string]int{}
	for _, m := range methods {
		for _, user := range []string{"u_viewer", "u_operator"} {
			d, err := e.Decide(ctx, &Input{Subject: Subject{Kind: SubjectUser, ID: user}, Gateway: GatewayRef{ID: "g"},
				Protocol: ProtocolWS, Action: "ws.call", WS: &WSMessage{Method: m}})
			if err != nil {
				t.Fatal(err)
			}
			if d.Allow {
				allowed[user]++
			}
			for _, scope := range required[m] {
				if d.Allow && !scopeSatisfied(scope, grants[user]) {
					t.Errorf("%s: the policy allows %s (class %s), but the gateway requires %s, beyond %v",
						m, user, d.Reason, scope, grants[user])
				}
			}
		}
	}
	// The comparison above only sees allowed calls: a fixture that denied everything would
	// pass it. Both roles must be allowed a fair share of the gateway's methods.
	if allowed["u_viewer"] < 20 || allowed["u_operator"] <= allowed["u_viewer"] {
		t.Fatalf("allowed methods: viewer %d, operator %d; want reads for viewers and more for operators", allowed["u_viewer"], allowed["u_operator"])
	}
}

// scopeSatisfied is a conservative model of the gateway's scope check: operator.admin
// satisfies everything, operator.write satisfies the read and session scopes, and every other
// scope (approvals, pairing, talk, questions) only itself.
func scopeSatisfied(scope string, granted []string) bool {
	switch {
	case slices.Contains(granted, scope), slices.Contains(granted, "operator.admin"):
		return true
	case scope == "operator.read", scope == "operator.sessions.read":
		return slices.Contains(granted, "operator.read") || slices.Contains(granted, "operator.write")
	case scope == "operator.sessions.write":
		return slices.Contains(granted, "operator.write")
	}
	return false
}
