package policies

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moltgate/moltgate/registry"
)

// Issue 12: a watched directory goes live when a good set is written; a bad one is refused
// (the old set keeps deciding, the refusal is counted and kept for /readyz); every reload is
// reported.
func TestWatchDirectory(t *testing.T) {
	t.Parallel()
	deny := func(reason string) string {
		return "package moltgate.custom\n\ndeny contains {\"reason\": \"" + reason + "\"} if input.action == \"http.read\"\n"
	}
	dir := writeSet(t, false, nil, map[string]string{"custom.rego": deny("first")})
	e, err := New(t.Context(), Config{Dir: dir}, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SetGateways(t.Context(), []registry.Gateway{{ID: "gw1", Owner: "u_owner", AuthMode: registry.AuthToken}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	results := make(chan error, 64)
	done := make(chan error, 1)
	go func() { done <- e.Watch(ctx, func(err error) { results <- err }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	reason := func() string {
		d, _ := e.Decide(t.Context(), owner("http.read"))
		return d.Reason
	}
	// write writes custom.rego and waits for a reload that satisfies done. The watcher may
	// not have the directory yet when the test starts: the file is written again each time
	// a reload passes or a poll interval goes by without one.
	write := func(body string, done func(error) bool) {
		t.Helper()
		for {
			if err := os.WriteFile(filepath.Join(dir, "custom.rego"), []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-results:
				if done(err) {
					return
				}
			case <-time.After(time.Second):
			case <-t.Context().Done():
				t.Fatal("no reload")
			}
		}
	}
	write(deny("second"), func(error) bool { return reason() == "second" })
	rev := e.Revision()
	write("package moltgate.custom\n\ndeny contains if\n", func(err error) bool { return err != nil })
	if got := reason(); got != "second" || e.Revision() != rev || e.LastRefusal() == nil {
		t.Errorf("after a refused set: reason %s, revision %s (want second, %s), last refusal %v", got, e.Revision(), rev, e.LastRefusal())
	}
	if got := testutil.ToFloat64(e.metrics.refused); got < 1 {
		t.Errorf("refused reloads: got %v, want at least 1", got)
	}
	write(deny("third"), func(error) bool { return reason() == "third" })
	if e.LastRefusal() != nil {
		t.Errorf("after a good set: last refusal %v, want none", e.LastRefusal())
	}
}

func TestWatchWithoutDirectory(t *testing.T) {
	t.Parallel()
	e, err := New(t.Context(), Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Watch(t.Context(), func(error) {}); err == nil {
		t.Fatal("got nil, want an error: the embedded set has no directory")
	}
}
