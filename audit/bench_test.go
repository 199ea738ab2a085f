package audit

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moltgate/moltgate/internal/testenv"
)

// Figures are printed on "bench " lines with MOLTGATE_BENCH_REPORT=1 (make bench), besides
// the b.ReportMetric values. Nothing here is asserted: speed is measured, not tested.
func benchLine(format string, args ...any) {
	if os.Getenv("MOLTGATE_BENCH_REPORT") == "1" {
		fmt.Printf("\nbench "+format+"\n", args...) // a line of its own, after the benchmark's name
	}
}

var benchEvent = Event{Type: TypePolicyDeny, Actor: Actor{Kind: "user", ID: "user_2abc"}, Tenant: "tenant-a", Gateway: "gw1",
	Action: "tools.invoke", Outcome: "deny", Reason: "role_forbids", RequestID: "1a2b3c4d-42",
	ClientIP: "203.0.113.9", PolicyRevision: "r1", Details: map[string]string{"method": "POST", "status": "403"}}

// BenchmarkSpoolToRedis measures events per second sustained from Emit through the spool
// into a Redis stream (issue 5 target: ≥ 50,000/s on 2 cores): the clock stops when Redis
// holds the last event. The baseline, in the same run against the same redis-server, is
// the same number of the same event lines XADDed directly in pipelines of the shipper's
// batch size: what Redis takes with no spool, no chain and no fsync in front of it.
func BenchmarkSpoolToRedis(b *testing.B) {
	srv := testenv.Redis(b)
	rdb := redisClient(b, srv.Addr)
	l, err := OpenFile(FileConfig{Dir: b.TempDir(), Replica: "bench", SpoolMaxBytes: 8 << 30,
		Sinks: []Sink{NewRedisSink(rdb, "bench")}}, quiet)
	if err != nil {
		b.Fatal(err)
	}
	runLogEvery(b, l, 100*time.Millisecond)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := l.Emit(context.Background(), benchEvent); err != nil {
				b.Error(err)
				return
			}
		}
	})
	head, _ := l.Head()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		id, err := rdb.XRevRangeN(context.Background(), StreamKey("bench"), "+", "-", 1).Result()
		if err == nil && len(id) == 1 && id[0].ID == fmt.Sprintf("%d-0", head) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("redis did not receive seq %d within 2 minutes (last entry %v, err %v)", head, id, err)
		}
		time.Sleep(time.Millisecond)
	}
	spooled := float64(b.N) / time.Since(start).Seconds()
	b.StopTimer()

	direct := directXAdd(b, rdb, b.N)
	b.ReportMetric(spooled, "events/s")
	b.ReportMetric(direct, "direct-xadd-events/s")
	b.ReportMetric(spooled/direct, "ratio-to-direct")
	if b.N >= 10000 {
		benchLine("audit_spool_to_redis_events_per_s %.0f (target >= 50000)", spooled)
		benchLine("audit_direct_xadd_events_per_s %.0f (baseline: same events, no spool)", direct)
		benchLine("audit_spool_to_redis_ratio %.2f", spooled/direct)
	}
}

// directXAdd sends n copies of the benchmark event's line to a fresh stream in pipelines of
// 5000 XADDs (the shipper's batch) and returns events per second.
func directXAdd(b *testing.B, rdb *redis.Client, n int) float64 {
	b.Helper()
	e := benchEvent
	e.Schema, e.Seq, e.Prev, e.Time, e.ID, e.Replica = Schema, 1, genesis, time.Now().UTC(), newID(time.Now()), "direct"
	line, err := e.seal()
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	key := StreamKey("direct-baseline")
	start := time.Now()
	for sent := 0; sent < n; {
		pipe := rdb.Pipeline()
		for range min(5000, n-sent) {
			sent++
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: key, ID: strconv.Itoa(sent) + "-0", Values: []any{"e", line}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkAuditedRequest measures what a refused request pays for its audit event, in the
// same run as the same handler without audit: each caller alternates an unaudited and an
// audited request. With the spool (written, fsync batched) and durable (each request waits
// for the group fsync). It reports the p99 of each, their ratio, and the p99 of Emit alone.
func BenchmarkAuditedRequest(b *testing.B) {
	for _, mode := range []string{"spool", "durable"} {
		b.Run(mode, func(b *testing.B) {
			l, err := OpenFile(FileConfig{Dir: filepath.Join(b.TempDir(), "spool"), Durable: mode == "durable",
				SpoolMaxBytes: 8 << 30}, quiet)
			if err != nil {
				b.Fatal(err)
			}
			runLogEvery(b, l, 100*time.Millisecond)
			refuse := func(w http.ResponseWriter) {
				http.Error(w, `{"error":"forbidden","reason":"not_a_member"}`, http.StatusForbidden)
			}
			plain := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { refuse(w) })
			audited := func(w http.ResponseWriter, r *http.Request) time.Duration {
				t0 := time.Now()
				if err := l.Emit(r.Context(), Event{Type: TypePolicyDeny, Actor: Actor{Kind: "user", ID: "user_2abc"},
					Tenant: "tenant-a", Gateway: "gw1", Action: "http.read", Outcome: "deny", Reason: "not_a_member",
					RequestID: "1a2b-1", ClientIP: "203.0.113.9", Details: map[string]string{"method": r.Method, "status": "403"}}); err != nil {
					b.Error(err)
				}
				emit := time.Since(t0)
				refuse(w)
				return emit
			}
			var mu sync.Mutex
			var plainT, auditedT, emitT []time.Duration
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req := httptest.NewRequest("GET", "http://gw1.gw.localhost/", nil)
				var p, a, e []time.Duration
				for i := 0; pb.Next(); i++ {
					t0 := time.Now()
					if i%2 == 0 {
						plain.ServeHTTP(httptest.NewRecorder(), req)
						p = append(p, time.Since(t0))
					} else {
						e = append(e, audited(httptest.NewRecorder(), req))
						a = append(a, time.Since(t0))
					}
				}
				mu.Lock()
				plainT, auditedT, emitT = append(plainT, p...), append(auditedT, a...), append(emitT, e...)
				mu.Unlock()
			})
			b.StopTimer()
			if len(auditedT) < 100 || len(plainT) < 100 {
				return // too few samples for a p99 (the calibration rounds)
			}
			pPlain, pAudited, pEmit := quantile(plainT, 99), quantile(auditedT, 99), quantile(emitT, 99)
			b.ReportMetric(float64(pAudited.Nanoseconds()), "p99-ns")
			b.ReportMetric(float64(pPlain.Nanoseconds()), "p99-unaudited-ns")
			b.ReportMetric(float64(pAudited)/float64(pPlain), "p99-ratio")
			b.ReportMetric(float64(pEmit.Nanoseconds()), "emit-p99-ns")
			b.ReportMetric(float64(quantile(emitT, 50).Nanoseconds()), "emit-p50-ns")
			if len(auditedT) >= 10000 {
				benchLine("audit_%s_request_p99_us %.1f (unaudited %.1f, ratio %.2f)", mode,
					float64(pAudited.Nanoseconds())/1e3, float64(pPlain.Nanoseconds())/1e3, float64(pAudited)/float64(pPlain))
				benchLine("audit_%s_emit_p99_us %.1f (p50 %.1f)", mode, float64(pEmit.Nanoseconds())/1e3,
					float64(quantile(emitT, 50).Nanoseconds())/1e3)
			}
		})
	}
}

// quantile returns the q-th percentile of d (sorting it).
func quantile(d []time.Duration, q int) time.Duration {
	slices.Sort(d)
	return d[len(d)*q/100]
}
