package audit

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/moltgate/moltgate/internal/testenv"
)

// BenchmarkSpoolToRedis measures events per second sustained from Emit through the spool
// into a Redis stream (issue 5 target: ≥ 50,000/s on 2 cores): the clock stops when Redis
// holds the last event.
func BenchmarkSpoolToRedis(b *testing.B) {
	srv := testenv.Redis(b)
	rdb := redisClient(b, srv.Addr)
	l, err := OpenFile(FileConfig{Dir: b.TempDir(), Replica: "bench", SpoolMaxBytes: 8 << 30,
		Sinks: []Sink{NewRedisSink(rdb, "bench")}}, quiet)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx, 100*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()
	ev := Event{Type: TypePolicyDeny, Actor: Actor{Kind: "user", ID: "user_2abc"}, Tenant: "tenant-a", Gateway: "gw1",
		Action: "tools.invoke", Outcome: "deny", Reason: "role_forbids", RequestID: "1a2b3c4d-42",
		ClientIP: "203.0.113.9", PolicyRevision: "r1", Details: map[string]string{"method": "POST", "status": "403"}}
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := l.Emit(context.Background(), ev); err != nil {
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
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "events/s")
}

// BenchmarkAuditedRequest measures what a refused request pays for its audit event: the
// same handler without audit, with the spool (written, fsync batched), and durable (waits
// for the group fsync). p99-ns is the 99th percentile of one request's time.
func BenchmarkAuditedRequest(b *testing.B) {
	for _, mode := range []string{"none", "spool", "durable"} {
		b.Run(mode, func(b *testing.B) {
			var l *FileLog
			if mode != "none" {
				var err error
				l, err = OpenFile(FileConfig{Dir: filepath.Join(b.TempDir(), "spool"), Durable: mode == "durable",
					SpoolMaxBytes: 8 << 30}, quiet)
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { l.Run(ctx, 100*time.Millisecond); close(done) }()
				defer func() { cancel(); <-done }()
			}
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if l != nil {
					l.Emit(r.Context(), Event{Type: TypePolicyDeny, Actor: Actor{Kind: "user", ID: "user_2abc"},
						Tenant: "tenant-a", Gateway: "gw1", Action: "http.read", Outcome: "deny", Reason: "not_a_member",
						RequestID: "1a2b-1", ClientIP: "203.0.113.9", Details: map[string]string{"method": r.Method, "status": "403"}})
				}
				http.Error(w, `{"error":"forbidden","reason":"not_a_member"}`, http.StatusForbidden)
			})
			var mu sync.Mutex
			var all []time.Duration
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req := httptest.NewRequest("GET", "http://gw1.gw.localhost/", nil)
				var mine []time.Duration
				for pb.Next() {
					t0 := time.Now()
					h.ServeHTTP(httptest.NewRecorder(), req)
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				all = append(all, mine...)
				mu.Unlock()
			})
			b.StopTimer()
			slices.Sort(all)
			if len(all) > 0 {
				b.ReportMetric(float64(all[len(all)*99/100].Nanoseconds()), "p99-ns")
			}
		})
	}
}
