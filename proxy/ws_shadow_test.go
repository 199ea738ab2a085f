package proxy_test

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/registry"
)

// Issue 12: a WebSocket message answered from the socket's decision cache is shadowed as
// every other decision is: a candidate set sees what it would change for socket traffic as
// it is, not only the first message of each kind.
func TestWSCachedDecisionsAreShadowed(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"freeze.rego": "package moltgate.custom\n\ndeny contains {\"reason\": \"sessions_frozen\"} if input.ws.method == \"sessions.list\"\n",
		"freeze_test.rego": "package moltgate.custom_test\n\nimport data.moltgate.custom\n\n" +
			"test_frozen if {\"reason\": \"sessions_frozen\"} in custom.deny with input as {\"ws\": {\"method\": \"sessions.list\"}}\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var diffs []policies.ShadowDifference
	cfg := testWSConfig
	f := buildFixtureWith(t, policies.Config{Timeout: testDecisionTimeout, ShadowDir: dir, ShadowReport: func(d policies.ShadowDifference) {
		mu.Lock()
		defer mu.Unlock()
		diffs = append(diffs, d)
	}}, registry.AuthToken, &cfg)
	t.Cleanup(f.engine.Close)

	c := f.connected(t, f.user("user_admin"))
	hits := func() float64 {
		return testutil.ToFloat64(mustCounter(t, f.metrics, "moltgate_ws_decision_cache_total", "hit"))
	}
	before := hits()
	const calls = 5
	for range calls {
		if res := c.call("sessions.list", map[string]any{}); res["ok"] != true {
			t.Fatalf("sessions.list: %v, want the live set's allow", res)
		}
	}
	if got := hits() - before; got == 0 {
		t.Fatalf("cache hits: got %v, want the repeats answered from the cache", got)
	}
	f.engine.WaitShadow()
	mu.Lock()
	defer mu.Unlock()
	if len(diffs) != calls {
		t.Fatalf("shadow differences: got %d, want %d (one per message, cached ones included)", len(diffs), calls)
	}
	for _, d := range diffs {
		if !d.Live.Allow || d.Candidate.Reason != "sessions_frozen" {
			t.Errorf("difference: live %+v, candidate %+v; want allow and sessions_frozen", d.Live, d.Candidate)
		}
		if ws, _ := d.Input["ws"].(map[string]any); ws["method"] != "sessions.list" {
			t.Errorf("difference input ws: got %v, want method sessions.list", d.Input["ws"])
		}
	}
}
