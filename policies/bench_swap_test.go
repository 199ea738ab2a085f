package policies

// BenchmarkPolicySwap (issue 12) times a change of the policy source to the first decision
// made by the new set: a file written to a watched directory, and a bundle published on a
// bundle server polled every 100 ms. Each swap writes or publishes a set whose custom deny
// gives a new reason, then decides a request every millisecond until the reason is the new
// one. The baseline, in the same run, is Engine.Reload of the same kind of set called
// directly (load, compile, type-check, its tests): what the source adds is the rest. With
// MOLTGATE_BENCH_REPORT=1 it prints, for `make bench`:
//
//	bench policy_swap_watch_p50_ms 239 (9 swaps, max 389 ms; target < 1000)
//	bench policy_swap_watch_vs_reload_p50 1.9 (direct p50 124 ms: the watcher waits 100 ms for quiet)
//
// and the same two lines for the bundle source. `make bench` runs it with the other
// benchmarks of this package (-bench . -benchtime 2s): about ten swaps of each.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"
	"time"

	"github.com/moltgate/moltgate/policies/bundletest"
	"github.com/moltgate/moltgate/registry"
)

// swapSet is an extension set whose deny refuses http.read with reason, with its test.
func swapSet(reason string) map[string]string {
	return map[string]string{
		"custom.rego":      "package moltgate.custom\n\ndeny contains {\"reason\": \"" + reason + "\"} if input.action == \"http.read\"\n",
		"custom_test.rego": "package moltgate.custom_test\n\nimport data.moltgate.custom\n\ntest_reason if {\"reason\": \"" + reason + "\"} in custom.deny with input as {\"action\": \"http.read\"}\n",
	}
}

// decidedBy decides a request every millisecond until the set with reason answers it.
func decidedBy(b *testing.B, e *Engine, reason string) {
	for {
		if d, _ := e.Decide(b.Context(), owner("http.read")); d.Reason == reason {
			return
		}
		select {
		case <-b.Context().Done():
			b.Fatalf("%s never decided", reason)
		case <-time.After(time.Millisecond):
		}
	}
}

func swapEngine(b *testing.B, cfg Config) *Engine {
	e, err := New(b.Context(), cfg, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := e.SetGateways(b.Context(), []registry.Gateway{{ID: "gw1", Owner: "u_owner", AuthMode: registry.AuthToken}}); err != nil {
		b.Fatal(err)
	}
	return e
}

func BenchmarkPolicySwap(b *testing.B) {
	b.Run("watch", func(b *testing.B) {
		dir := b.TempDir()
		write := func(reason string) {
			for name, body := range swapSet(reason) {
				tmp := filepath.Join(dir, ".tmp-"+name)
				if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
					b.Fatal(err)
				}
				if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
					b.Fatal(err)
				}
			}
		}
		write("start")
		e := swapEngine(b, Config{Dir: dir})
		ctx, cancel := context.WithCancel(b.Context())
		done := make(chan struct{})
		go func() { defer close(done); e.Watch(ctx, func(error) {}) }()
		// The watcher may not watch yet: write until a reload shows.
		for i := 0; ; i++ {
			write(fmt.Sprint("warm_", i))
			if d, _ := e.Decide(b.Context(), owner("http.read")); d.Reason != "start" {
				break
			}
			time.Sleep(300 * time.Millisecond)
		}
		var swaps []time.Duration
		for b.Loop() {
			reason := fmt.Sprint("swap_", len(swaps))
			start := time.Now()
			write(reason)
			decidedBy(b, e, reason)
			swaps = append(swaps, time.Since(start))
		}
		direct := directReloads(b, cancel, done, len(swaps), func(i int) func() error {
			write(fmt.Sprint("direct_", i))
			return func() error { return e.Reload(b.Context()) }
		})
		reportSwap(b, "watch", swaps, direct, "the watcher waits 100 ms for quiet")
	})

	b.Run("bundle", func(b *testing.B) {
		priv, pub, err := bundletest.KeyPair()
		if err != nil {
			b.Fatal(err)
		}
		publication := func(reason string) []byte {
			fsys := fstest.MapFS{}
			for name, body := range swapSet(reason) {
				fsys[name] = &fstest.MapFile{Data: []byte(body)}
			}
			bd, err := BuildBundle(fsys, reason)
			if err != nil {
				b.Fatal(err)
			}
			if err := SignBundle(&bd, string(priv), "ES256", ""); err != nil {
				b.Fatal(err)
			}
			body, err := bundletest.Encode(bd)
			if err != nil {
				b.Fatal(err)
			}
			return body
		}
		srv := bundletest.New()
		b.Cleanup(srv.Close)
		srv.Publish(publication("start"))
		e := swapEngine(b, Config{Bundle: &BundleConfig{URL: srv.URL, PollInterval: 100 * time.Millisecond, VerificationKey: pub, Algorithm: "ES256"}})
		ctx, cancel := context.WithCancel(b.Context())
		done := make(chan struct{})
		go func() { defer close(done); e.PollBundle(ctx, func(error) {}) }()
		var swaps []time.Duration
		for b.Loop() {
			reason := fmt.Sprint("swap_", len(swaps))
			body := publication(reason) // built and signed before the clock starts
			start := time.Now()
			srv.Publish(body)
			decidedBy(b, e, reason)
			swaps = append(swaps, time.Since(start))
		}
		direct := directReloads(b, cancel, done, len(swaps), func(i int) func() error {
			body := publication(fmt.Sprint("direct_", i))
			return func() error {
				return e.reloadWith(b.Context(), func() (*candidate, error) { return e.remote.read(body, "") })
			}
		})
		reportSwap(b, "bundle", swaps, direct, "read, signature check and reload of the same bundles; polled every 100 ms")
	})
}

// directReloads stops the source (cancel, then done) and times n reloads called directly:
// prepare(i) sets the i-th set up, untimed, and returns the timed reload.
func directReloads(b *testing.B, cancel func(), done <-chan struct{}, n int, prepare func(i int) func() error) []time.Duration {
	b.StopTimer()
	cancel()
	<-done
	direct := make([]time.Duration, n)
	for i := range direct {
		reload := prepare(i)
		start := time.Now()
		if err := reload(); err != nil {
			b.Fatal(err)
		}
		direct[i] = time.Since(start)
	}
	return direct
}

// reportSwap reports the swap times and their ratio to the direct reloads.
func reportSwap(b *testing.B, source string, swaps, direct []time.Duration, note string) {
	p50, max := percentile(swaps, 50), percentile(swaps, 100)
	b.ReportMetric(float64(p50.Milliseconds()), "p50-ms")
	b.ReportMetric(float64(max.Milliseconds()), "max-ms")
	if os.Getenv("MOLTGATE_BENCH_REPORT") != "1" {
		return
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
	fmt.Printf("bench policy_swap_%s_p50_ms %.0f (%d swaps, max %.0f ms; target < 1000)\n", source, ms(p50), len(swaps), ms(max))
	fmt.Printf("bench policy_swap_%s_vs_reload_p50 %.1f (direct p50 %.0f ms: %s)\n", source,
		float64(p50)/float64(percentile(direct, 50)), ms(percentile(direct, 50)), note)
}
