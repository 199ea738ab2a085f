package policies

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/moltgate/moltgate/internal/testenv"
)

// Issue 12: the host-command tools and the channel policy values of ws.json are the pinned
// gateway's own: its RUNTIME_TOOLS (the tools that run commands on the host) and the values
// of its DM and group policy enums, of which only "open" admits anyone.
func TestControlsMatchTheGateway(t *testing.T) {
	dist := filepath.Join(testenv.OpenClawDir(t), "node_modules", "openclaw", "dist")
	var ws struct {
		WS struct {
			HostCommandTools    []string `json:"host_command_tools"`
			ChannelOpenPolicies []string `json:"channel_open_policies"`
		} `json:"ws"`
	}
	b, err := fs.ReadFile(Default(), "ws.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &ws); err != nil {
		t.Fatal(err)
	}
	find := func(glob string, re *regexp.Regexp) []string {
		t.Helper()
		files, _ := filepath.Glob(filepath.Join(dist, glob))
		for _, f := range files {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if m := re.FindSubmatch(src); m != nil {
				return regexp.MustCompile(`"([^"]+)"`).FindAllString(string(m[1]), -1)
			}
		}
		t.Fatalf("%s: %v not found in the gateway's code", glob, re)
		return nil
	}
	runtime := find("exec-filesystem-policy-*.mjs", regexp.MustCompile(`const RUNTIME_TOOLS = \[([^\]]*)\]`))
	if got, want := quoted(ws.WS.HostCommandTools), runtime; !slices.Equal(got, want) {
		t.Errorf("host_command_tools: got %v, want the gateway's RUNTIME_TOOLS %v", got, want)
	}
	for _, enum := range []string{"DmPolicySchema", "GroupPolicySchema"} {
		values := find("*.mjs", regexp.MustCompile(`const `+enum+` = _enum\(\[([^\]]*)\]`))
		want := []string{`"disabled"`, `"allowlist"`, `"open"`}
		if enum == "DmPolicySchema" {
			want = append(want, `"pairing"`)
		}
		slices.Sort(values)
		slices.Sort(want)
		if !slices.Equal(values, want) {
			t.Errorf("%s: the gateway's values are %v; ws.json channel_open_policies %v was written for %v", enum, values, ws.WS.ChannelOpenPolicies, want)
		}
	}
}

func quoted(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = `"` + s + `"`
	}
	return out
}

// The relay's input for a configuration write reaches the policy through the engine's codec.
func TestChannelControlsThroughTheEngine(t *testing.T) {
	t.Parallel()
	e := extensionEngine(t, map[string]string{"custom.rego": "package moltgate.custom\n"})
	admin := &Input{Subject: Subject{Kind: SubjectUser, ID: "u_owner"}, Gateway: GatewayRef{ID: "gw1"}, Protocol: ProtocolWS, Action: "ws.call"}
	tests := []struct {
		name   string
		ws     WSMessage
		reason string
	}{
		{"opening", WSMessage{Method: "config.patch", Channels: map[string]any{"discord": map[string]any{"guilds": map[string]any{"1": map[string]any{"users": []any{"2"}}}}}}, "second_factor_required"},
		{"unreadable", WSMessage{Method: "config.set", ConfigUnreadable: true}, "second_factor_required"},
		{"tightening", WSMessage{Method: "config.patch", Channels: map[string]any{"whatsapp": map[string]any{"dmPolicy": "pairing", "allowFrom": []any{}}}}, "admin"},
	}
	for _, tt := range tests {
		admin.WS = &tt.ws
		d, err := e.Decide(t.Context(), admin)
		if err != nil || d.Reason != tt.reason {
			t.Errorf("%s: got %+v, %v; want reason %s", tt.name, d, err, tt.reason)
		}
	}
}
