package policies

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/registry"
)

func TestCanonicalName(t *testing.T) {
	for in, want := range map[string]string{
		"exec":              "exec",
		" exec\t\n":         "exec",
		"EXEC":              "exec",
		"\u00a0exec\u3000":  "exec", // no-break and ideographic spaces
		"\ufeffexec":        "exec", // JavaScript's trim removes a byte order mark; Go's IsSpace does not
		"exec\u2028":        "exec",
		"bash":              "exec",
		" Bash ":            "exec",
		"apply-patch":       "apply_patch",
		"cron":              "automations",
		"web_search":        "web_search",
		"ex ec":             "ex ec", // inner space is kept: the gateway would look up "ex ec"
		"":                  "",
		" \t ":              "",
		"exec\u200b":        "exec\u200b", // a zero-width space is not white space to either
		"my-plugin.Tool_01": "my-plugin.tool_01",
	} {
		if got := CanonicalName(in); got != want {
			t.Errorf("CanonicalName(%q) = %q, want %q", in, got, want)
		}
	}
}

// The names a policy compares must be the names the gateway runs. The real gateway (the
// pinned version in .cache/openclaw) is asked, with its own code, how it reads each name
// below: the tool it runs and the name its own tool policy matches. For every name, both must
// have the canonical name moltgate decided on, so a deny list binds every spelling of a
// tool; and moltgate's alias table must be the gateway's.
func TestCanonicalNamesMatchTheGateway(t *testing.T) {
	names := []string{
		"exec", " exec", "exec ", "\texec\n", "EXEC", "Exec", "\u00a0exec", "exec\u3000", "\ufeffexec",
		"exec\u2028", "\u2029exec", "exec\u000b", "exec\u000c", "\u1680exec", "exec\u202f", "exec\u205f",
		"exec\u0085", "bash", " BASH ", "apply-patch", "Apply-Patch", "apply_patch", "cron", " cron",
		"CRON", "automations", "web_search", "sessions_list", "ex ec", "exec\u200b", "", "   ",
	}
	dir := testenv.OpenClawDir(t)
	in, _ := json.Marshal(names)
	cmd := exec.Command(filepath.Join(dir, "node_modules", ".bin", "node"), "testdata/openclaw_names.mjs", dir)
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("asking the gateway how it reads tool names: %v", err)
	}
	var got struct {
		Aliases        map[string]string
		Names          []struct{ Run, Policy string }
		OwnerOnlyTools []string
	}
	if err := json.Unmarshal(out, &got); err != nil || len(got.Names) != len(names) {
		t.Fatalf("gateway's answer %s: %v", out, err)
	}
	if !maps.Equal(got.Aliases, toolAliases) {
		t.Errorf("the gateway's tool aliases are %v; moltgate resolves %v", got.Aliases, toolAliases)
	}
	// Over HTTP the gateway runs every tool as its owner's (shared token); the default
	// policy keeps the tools it reserves for its owner for admins (http.json).
	var httpData struct {
		HTTP struct {
			OwnerOnlyTools []string `json:"owner_only_tools"`
		} `json:"http"`
	}
	if raw, err := os.ReadFile("http.json"); err != nil || json.Unmarshal(raw, &httpData) != nil {
		t.Fatalf("http.json: %v", err)
	}
	if len(got.OwnerOnlyTools) < 5 {
		t.Fatalf("the gateway's owner-only tools: %v, want its list", got.OwnerOnlyTools)
	}
	for _, tool := range got.OwnerOnlyTools {
		if !slices.Contains(httpData.HTTP.OwnerOnlyTools, CanonicalName(tool)) {
			t.Errorf("the gateway keeps tool %q for its owner; http.json owner_only_tools does not list it", tool)
		}
	}
	for _, tool := range httpData.HTTP.OwnerOnlyTools {
		if CanonicalName(tool) != tool {
			t.Errorf("http.json owner_only_tools: %q is not canonical (%q): input names are", tool, CanonicalName(tool))
		}
	}
	for i, name := range names {
		want := CanonicalName(name)
		if r := CanonicalName(got.Names[i].Run); r != want {
			t.Errorf("%q: the gateway runs %q (canonical %q); moltgate decides on %q", name, got.Names[i].Run, r, want)
		}
		// Go's white space includes U+0085, which JavaScript's trim keeps: there moltgate's
		// name is shorter than the gateway's, and canonicalising the gateway's makes them equal.
		if p := CanonicalName(got.Names[i].Policy); p != want {
			t.Errorf("%q: the gateway's tool policy matches %q (canonical %q); moltgate decides on %q", name, got.Names[i].Policy, p, want)
		}
	}
}

// Skill rules are decided on canonical names on both sides: the request's and the lists'.
func TestSkillRulesUseCanonicalNames(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t, Config{}, nil)
	if err := e.SetGateways(ctx, []registry.Gateway{
		{ID: "g", Tenant: "t", Owner: "u", AuthMode: registry.AuthToken, Skills: registry.SkillRules{Deny: []string{" Bash"}}},
		{ID: "h", Tenant: "t", Owner: "u", AuthMode: registry.AuthToken, Skills: registry.SkillRules{Allow: []string{"CRON"}}},
	}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		gateway, tool string
		allow         bool
	}{
		{"g", "exec", false},
		{"g", "EXEC ", false},
		{"g", "bash", false},
		{"g", "web_search", true},
		{"h", "automations", true},
		{"h", " cron", true},
		{"h", "exec", false},
	} {
		for _, in := range []Input{
			{Subject: Subject{Kind: SubjectUser, ID: "u"}, Gateway: GatewayRef{ID: tt.gateway}, Protocol: ProtocolHTTP,
				Action: "tools.invoke", Request: Request{Method: "POST", Path: "/tools/invoke", Tool: tt.tool}},
			{Subject: Subject{Kind: SubjectUser, ID: "u"}, Gateway: GatewayRef{ID: tt.gateway}, Protocol: ProtocolWS,
				Action: "ws.call", WS: &WSMessage{Method: "tools.invoke", Tool: tt.tool}},
		} {
			d, err := e.Decide(ctx, &in)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allow != tt.allow {
				t.Errorf("%s %s %q: got %+v, want allow %v", in.Protocol, tt.gateway, tt.tool, d, tt.allow)
			}
		}
	}
}
