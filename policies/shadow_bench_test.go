// Benchmarks of shadow mode and of the extension point (issue 12).
//
//	MOLTGATE_BENCH_REPORT=1 go test -run '^$' -bench 'Shadow|EmptyExtension' -cpu 1 ./policies/
//
// Each prints, with MOLTGATE_BENCH_REPORT=1, `bench ` lines whose ratios are against a
// baseline measured in the same run on the same 10,000 gateways and inputs.
package policies

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// benchEngine returns an engine over 10,000 gateways, warmed up on ins.
func benchEngine(b *testing.B, cfg Config, ins []Input) *Engine {
	b.Helper()
	cfg.Timeout = time.Second // a benchmark measures, it must not fail on one slow call
	e := newTestEngine(b, cfg, nil)
	b.Cleanup(e.Close)
	if err := e.SetGateways(context.Background(), benchGateways(10_000)); err != nil {
		b.Fatal(err)
	}
	for i := range ins {
		if _, err := e.Decide(context.Background(), &ins[i]); err != nil {
			b.Fatal(err)
		}
	}
	e.WaitShadow()
	return e
}

// benchDir writes one policy file into a new directory.
func benchDir(b *testing.B, name, src string) string {
	b.Helper()
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o600); err != nil {
		b.Fatal(err)
	}
	return dir
}

// timeDecide times each Decide of e over ins in b's loop, then runs after (if any) untimed,
// and reports the median.
func timeDecide(b *testing.B, e *Engine, ins []Input, after func()) []time.Duration {
	times := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		_, err := e.Decide(context.Background(), &ins[i%len(ins)])
		times = append(times, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		if after != nil {
			b.StopTimer()
			after()
			b.StartTimer()
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(percentile(times, 50).Nanoseconds()), "p50-ns")
	return times
}

// BenchmarkShadow times Decide with a candidate set shadowing the live one. The candidate
// is evaluated after Decide returns: each timed call is followed, untimed, by waiting for
// its candidate evaluation, so the figure is what a request waits. The report adds the
// whole work per decision (live and candidate, waited for) against the live set alone.
func BenchmarkShadow(b *testing.B) {
	ctx := context.Background()
	ins := benchInputs(10_000)
	e := benchEngine(b, Config{ShadowDir: benchDir(b, "retire.rego", retireRoute(b))}, ins)
	times := timeDecide(b, e, ins, e.WaitShadow)
	p50 := percentile(times, 50)
	if os.Getenv("MOLTGATE_BENCH_REPORT") != "1" || len(times) < 1000 {
		return
	}
	live := benchEngine(b, Config{}, ins)
	lt := latencies(len(times), func(i int) {
		if _, err := live.Decide(ctx, &ins[i%len(ins)]); err != nil {
			b.Fatal(err)
		}
	})
	fmt.Printf("bench policy_shadow_decision_p50_us %.1f (live alone %.1f; candidate evaluated after the answer)\n", us(p50), us(percentile(lt, 50)))
	fmt.Printf("bench policy_shadow_vs_live_p50 %.2f (target <= 1.5)\n", float64(p50)/float64(percentile(lt, 50)))

	// The whole work per decision: Decide and its candidate evaluation, waited for, against
	// the live set alone (medians: the machine's stalls stay out of them).
	wt := latencies(len(times), func(i int) {
		if _, err := e.Decide(ctx, &ins[i%len(ins)]); err != nil {
			b.Fatal(err)
		}
		e.WaitShadow()
	})
	w50, l50 := percentile(wt, 50), percentile(lt, 50)
	fmt.Printf("bench policy_shadow_work_p50_us %.1f (live and candidate, waited for; live alone %.1f)\n", us(w50), us(l50))
	fmt.Printf("bench policy_shadow_work_vs_live_p50 %.2f\n", float64(w50)/float64(l50))
}

// BenchmarkEmptyExtension times Decide through the extension point's merge
// (data.moltgate.authz.decision) with an empty moltgate.custom package, and reports it
// against the default rules' own answer (default_decision), which is what the engine
// queries when moltgate.custom has no rules.
func BenchmarkEmptyExtension(b *testing.B) {
	ctx := context.Background()
	ins := benchInputs(10_000)
	// A directory whose moltgate.custom module has no rules: the engine takes the fast path.
	empty := benchEngine(b, Config{Dir: benchDir(b, "custom.rego", "package moltgate.custom\n")}, ins)
	if got := empty.cur.Load().queried; got != defaultDecisionQuery {
		b.Fatalf("empty moltgate.custom: engine queries %s, want %s", got, defaultDecisionQuery)
	}
	// The same set forced through the merge: what an empty extension would cost without it.
	merged := benchEngine(b, Config{}, ins)
	src, err := loadSource(ctx, Default(), "embedded policies")
	if err != nil {
		b.Fatal(err)
	}
	src.query = DecisionQuery
	set, err := merged.prepare(ctx, src, merged.store)
	if err != nil {
		b.Fatal(err)
	}
	merged.cur.Store(set)

	times := timeDecide(b, merged, ins, nil)
	p50 := percentile(times, 50)
	if os.Getenv("MOLTGATE_BENCH_REPORT") != "1" || len(times) < 1000 {
		return
	}
	base := benchEngine(b, Config{}, ins)
	decide := func(e *Engine) []time.Duration {
		return latencies(len(times), func(i int) {
			if _, err := e.Decide(ctx, &ins[i%len(ins)]); err != nil {
				b.Fatal(err)
			}
		})
	}
	bp, ep := percentile(decide(base), 50), percentile(decide(empty), 50)
	fmt.Printf("bench policy_extension_merge_p50_us %.1f (empty moltgate.custom through the merge; default_decision alone %.1f)\n", us(p50), us(bp))
	fmt.Printf("bench policy_extension_merge_vs_default %.3f (what the merge would cost an empty extension)\n", float64(p50)/float64(bp))
	fmt.Printf("bench policy_extension_empty_vs_default %.3f (target < 1.05: an empty moltgate.custom as served)\n", float64(ep)/float64(bp))
}
