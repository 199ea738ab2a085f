package decisionlog_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/decisionlog"
	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/registry"
)

// BenchmarkDecisionLog measures what the decision log adds to an allowed decision at the
// default sample rate (1 % written to a real audit spool), against the engine alone,
// interleaved in the same run. With MOLTGATE_BENCH_REPORT=1 it prints `bench` lines:
//
//	go test -run '^$' -bench DecisionLog -cpu 1 ./decisionlog/
func BenchmarkDecisionLog(b *testing.B) {
	ctx := context.Background()
	e, err := policies.New(ctx, policies.Config{Timeout: time.Second}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := e.SetGateways(ctx, []registry.Gateway{{ID: "gw1", Tenant: "t1", Owner: "u_owner", AuthMode: registry.AuthToken}}); err != nil {
		b.Fatal(err)
	}
	al, err := audit.OpenFile(audit.FileConfig{Dir: filepath.Join(b.TempDir(), "audit")}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer al.Close()
	l, err := decisionlog.New(decisionlog.Config{AllowSampleRate: decisionlog.DefaultAllowSampleRate}, e, al, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	in := read("u_owner", "/chat")
	var logged, alone []time.Duration
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		if _, err := l.Decide(ctx, in); err != nil {
			b.Fatal(err)
		}
		logged = append(logged, time.Since(start))
		start = time.Now()
		if _, err := e.Decide(ctx, in); err != nil {
			b.Fatal(err)
		}
		alone = append(alone, time.Since(start))
	}
	b.StopTimer()
	if os.Getenv("MOLTGATE_BENCH_REPORT") != "1" || len(logged) < 1000 {
		return
	}
	p := func(ds []time.Duration, q int) time.Duration {
		slices.Sort(ds)
		return ds[len(ds)*q/100]
	}
	fmt.Printf("bench decision_log_allow_p50_us %.1f (rate 0.01, audit spool) vs engine alone %.1f: %.2f\n",
		us(p(logged, 50)), us(p(alone, 50)), float64(p(logged, 50))/float64(p(alone, 50)))
	fmt.Printf("bench decision_log_allow_p99_us %.1f vs engine alone %.1f\n", us(p(logged, 99)), us(p(alone, 99)))
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
