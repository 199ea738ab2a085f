package proxy_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy"
	"github.com/moltgate/moltgate/ratelimit"
	"github.com/moltgate/moltgate/registry"
	"github.com/moltgate/moltgate/store"
)

// BenchmarkAuthFailureCheck is one allowed gateway-token request through the whole handler
// with no limit on failed authentications (the baseline), with the one-replica budget
// (ratelimit.Memory) and with the replicas' (SharedFailures: the budget in a real Redis, the
// request path reading only the replica's blocks), interleaved in one run. With
// MOLTGATE_BENCH_REPORT=1 it prints each one's cost and its ratio to the baseline.
func BenchmarkAuthFailureCheck(b *testing.B) {
	f := newFixture(b, registry.AuthToken)
	limit := ratelimit.Limit{Rate: 30, Per: 5 * time.Minute, Burst: 30}
	memory, err := ratelimit.NewMemory(ratelimit.MemoryConfig{Limit: limit})
	if err != nil {
		b.Fatal(err)
	}
	kv, err := store.OpenRedis(b.Context(), store.RedisConfig{Addr: testenv.Redis(b).Addr})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { kv.Close() })
	inRedis, err := ratelimit.NewRedis(ratelimit.RedisConfig{Limit: limit, Prefix: "bench:authn:"}, kv.Client())
	if err != nil {
		b.Fatal(err)
	}
	shared := proxy.NewSharedFailures(inRedis, kv, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	handlers := []struct {
		name string
		h    http.Handler
	}{
		{"none", limitedHandler(b, f, nil, time.Now, prometheus.NewRegistry())},
		{"memory", limitedHandler(b, f, memory, time.Now, prometheus.NewRegistry())},
		{"shared", limitedHandler(b, f, shared, time.Now, prometheus.NewRegistry())},
	}
	spent := make([]time.Duration, len(handlers))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h := handlers[i%len(handlers)]
		req := httptest.NewRequest(http.MethodGet, "http://gwa.gw.localhost/health", nil)
		req.Header.Set("Authorization", "Bearer "+tokA)
		w := httptest.NewRecorder()
		start := time.Now()
		h.h.ServeHTTP(w, req)
		spent[i%len(handlers)] += time.Since(start)
		if w.Code != http.StatusOK {
			b.Fatalf("%s: status %d: %s", h.name, w.Code, w.Body)
		}
	}
	if os.Getenv("MOLTGATE_BENCH_REPORT") != "1" || b.N < 300 {
		return
	}
	each := float64(b.N / len(handlers))
	for i, h := range handlers {
		fmt.Printf("bench request_auth_limit_%s_us %.1f (whole handler, gateway token, loopback upstream)\n", h.name, float64(spent[i].Microseconds())/each)
	}
	for i := 1; i < len(handlers); i++ {
		fmt.Printf("bench auth_limit_%s_vs_none %.2f\n", handlers[i].name, float64(spent[i])/float64(spent[0]))
	}
}
