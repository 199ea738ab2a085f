package store

// Benchmarks of the replicas' change stream (issue 11), run by make bench:
//
//	MOLTGATE_BENCH_REPORT=1 go test -run '^$' -bench 'Propagation|Fresh' ./store/
//
// With MOLTGATE_BENCH_REPORT=1 they print lines starting with "bench ".

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/moltgate/moltgate/internal/testenv"
)

// BenchmarkPropagation: from a write on one replica (its Put called) to the change applied
// to another replica's view (its follower's Apply called), against Redis's own round trip
// (PING) measured in the same run on the same server.
func BenchmarkPropagation(b *testing.B) {
	srv := testenv.Redis(b)
	open := func() *Redis {
		r, err := OpenRedis(b.Context(), RedisConfig{Addr: srv.Addr})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { r.Close() })
		return r
	}
	writer, reader := open(), open()
	applied := make(chan Change, 1)
	f, err := reader.Follow(b.Context(), FollowConfig{Logger: slog.New(slog.DiscardHandler),
		Apply:  func(_ context.Context, c Change) error { applied <- c; return nil },
		Reload: func(context.Context) error { return nil }})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })

	prop := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if err := writer.Put("gateways", fmt.Sprint("g", i%100), []byte("v")); err != nil {
			b.Fatal(err)
		}
		<-applied
		prop = append(prop, time.Since(start))
	}
	b.StopTimer()
	rtt := make([]time.Duration, 0, b.N)
	for range b.N {
		start := time.Now()
		if err := writer.c.Ping(b.Context()).Err(); err != nil {
			b.Fatal(err)
		}
		rtt = append(rtt, time.Since(start))
	}
	b.ReportMetric(float64(pct(prop, 50).Microseconds()), "p50-us")
	b.ReportMetric(float64(pct(prop, 99).Microseconds()), "p99-us")
	if os.Getenv("MOLTGATE_BENCH_REPORT") != "1" || b.N < 100 {
		return
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	// The leading newline ends the line go test began with the benchmark's name.
	fmt.Printf("\nbench replica_propagation_p50_us %.0f (write on one replica to the change applied on another, %d changes)\n", us(pct(prop, 50)), b.N)
	fmt.Printf("bench replica_propagation_p99_us %.0f\n", us(pct(prop, 99)))
	fmt.Printf("bench redis_rtt_p50_us %.0f (PING, same server, same run)\n", us(pct(rtt, 50)))
	fmt.Printf("bench redis_rtt_p99_us %.0f\n", us(pct(rtt, 99)))
	fmt.Printf("bench replica_propagation_vs_rtt_p50 %.1f\n", float64(pct(prop, 50))/float64(pct(rtt, 50)))
}

// BenchmarkFresh: the check every decision makes on the Redis store (an atomic load and a
// compare), which the bbolt path does not make at all.
func BenchmarkFresh(b *testing.B) {
	f := &Follower{cfg: FollowConfig{MaxStaleness: time.Hour}}
	f.confirm(time.Now())
	b.ReportAllocs()
	for b.Loop() {
		if err := f.Fresh(); err != nil {
			b.Fatal(err)
		}
	}
	if os.Getenv("MOLTGATE_BENCH_REPORT") == "1" {
		ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		fmt.Printf("\nbench fresh_view_check_ns %.1f per decision, 0 allocations (bbolt path: no check)\n", ns)
	}
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}
