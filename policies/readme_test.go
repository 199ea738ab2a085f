package policies

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/registry"
)

// readmeExamples returns the files of the README's worked extension examples: each ```rego
// block, split where a line "# name.rego" starts a file.
func readmeExamples(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	start := regexp.MustCompile(`^# ([a-z_]+\.rego)(:.*)?$`)
	files := map[string]string{}
	for _, block := range regexp.MustCompile("(?s)```rego\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		var name string
		for _, line := range strings.SplitAfter(block[1], "\n") {
			if m := start.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
				name = m[1]
			}
			if name != "" {
				files[name] += line
			}
		}
	}
	return files
}

// Issue 12: the README's three worked examples (time of day, a per-tenant tool ban, a
// country allowlist) load as an extension of the defaults, pass their own tests, and decide
// as they say through the engine.
func TestREADMEExtensionExamples(t *testing.T) {
	t.Parallel()
	files := readmeExamples(t)
	for _, name := range []string{"hours.rego", "hours_test.rego", "tool_ban.rego", "tool_ban_test.rego", "country.rego", "country_test.rego"} {
		if files[name] == "" {
			t.Fatalf("README: no example %s", name)
		}
	}
	dir := writeSet(t, false, nil, files)
	results, err := RunTests(t.Context(), os.DirFS(dir))
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 5 {
		t.Errorf("got %d tests, want the examples' 5", len(results))
	}
	for _, r := range results {
		if r.Failed() {
			t.Errorf("%v", r)
		}
	}

	e := extensionEngine(t, map[string]string{"country.rego": files["country.rego"], "tool_ban.rego": files["tool_ban.rego"]})
	if err := e.SetGateways(t.Context(), []registry.Gateway{{ID: "gw1", Tenant: "t_acme", Owner: "u_owner", AuthMode: registry.AuthToken}}); err != nil {
		t.Fatal(err)
	}
	in := owner("http.read")
	for _, tt := range []struct {
		country, tool, reason string
	}{
		{"DE", "", "owner"},
		{"US", "", "country_not_allowed"},
		{"", "", "country_not_allowed"},
		{"FR", "web_fetch", "tool_banned_for_tenant"},
	} {
		in.Request.Country, in.Request.Tool, in.Action = tt.country, tt.tool, "http.read"
		if tt.tool != "" {
			in.Action = "tools.invoke"
		}
		d, err := e.Decide(t.Context(), in)
		if err != nil || d.Reason != tt.reason {
			t.Errorf("country %q tool %q: got %+v, %v; want reason %s", tt.country, tt.tool, d, err, tt.reason)
		}
	}
}
