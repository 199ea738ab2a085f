package main_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy/admin"
)

// BenchmarkReplicas is issue 11's "requests per second of two replicas against one on the
// same machine": two `moltgate serve` on one redis-server, the same load (gateway-token GETs
// through the proxy, policy and audit on, the audit streams in Redis) sent to replica A
// alone, then spread over A and B, interleaved, the better of two runs each. With taskset,
// the replicas share CPU 0 and this process (the load generator and the upstream) has CPU 1:
// on a 2-core machine the two replicas compete for one core, so the ratio shows what running
// on the shared store costs a replica, not how replicas scale across cores.
func BenchmarkReplicas(b *testing.B) {
	duration := 5 * time.Second
	if v, err := time.ParseDuration(os.Getenv("MOLTGATE_BENCH_DURATION")); err == nil {
		duration = v
	}
	rdb := testenv.Redis(b)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"ok":true}`)) }))
	b.Cleanup(upstream.Close)
	reps, _ := startReplicasWith(b, 2, rdb.Addr, replicaOptions{})
	const id = "gwbench"
	token := fmt.Sprintf("%064x", 0xbe4c)
	if _, err := reps[0].admin().Create(b.Context(), admin.CreateRequest{ID: id, Tenant: "org_bench", Owner: "user_bench",
		Upstream: upstream.URL, Token: token}); err != nil {
		b.Fatal(err)
	}
	for _, in := range reps {
		testenv.WaitUntil(b, "the gateway served on every replica", 10*time.Second, func() bool {
			status, _, err := proxyGet(in, id, "/", token)
			return err == nil && status == http.StatusOK
		})
	}
	pinned := "unpinned (no taskset)"
	if _, err := exec.LookPath("taskset"); err == nil {
		pin := func(cpu string, pid int) error {
			return exec.Command("taskset", "-a", "-c", "-p", cpu, strconv.Itoa(pid)).Run()
		}
		err := pin("1", os.Getpid())
		for _, in := range reps {
			err = errors.Join(err, pin("0", in.cmd.Process.Pid))
		}
		if err != nil {
			b.Fatalf("taskset: %v", err)
		}
		pinned = "replicas on CPU 0, load generator and upstream on CPU 1"
	}

	one, two := []*instance{reps[0]}, reps
	// busy is the CPU the replicas used during a run, in cores: whether one replica alone
	// fills the core the two share says what the ratio can mean.
	var busy [2]float64
	load := func(targets []*instance, d time.Duration) (float64, float64) {
		before := cpuSeconds(b, reps...)
		start := time.Now()
		rps := replicaLoad(b, targets, id, token, d)
		return rps, (cpuSeconds(b, reps...) - before) / time.Since(start).Seconds()
	}
	b.ResetTimer()
	load(two, time.Second) // warm both
	var best [2]float64
	for range 2 {
		for i, targets := range [][]*instance{one, two} {
			if rps, cpu := load(targets, duration); rps > best[i] {
				best[i], busy[i] = rps, cpu
			}
		}
	}
	b.StopTimer()
	fmt.Printf("bench replicas_cpus %d (%s)\n", runtime.NumCPU(), pinned)
	fmt.Printf("bench replicas_one_rps %.0f (replicas' CPU %.2f cores)\n", best[0], busy[0])
	fmt.Printf("bench replicas_two_rps %.0f (replicas' CPU %.2f cores)\n", best[1], busy[1])
	fmt.Printf("bench replicas_rps_ratio %.2f (two replicas against one, same machine)\n", best[1]/best[0])
	b.ReportMetric(best[1]/best[0], "ratio")
}

// replicaLoad sends gateway-token GETs for gateway id from 32 connections, spread evenly over
// targets, for d, and returns the answered requests per second; any answer but 200 fails.
func replicaLoad(b *testing.B, targets []*instance, id, token string, d time.Duration) float64 {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	var n atomic.Int64
	var failed atomic.Value
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range 32 {
		in := targets[w%len(targets)]
		wg.Go(func() {
			for time.Now().Before(deadline) {
				req, _ := http.NewRequest("GET", in.proxyURL+"/", nil)
				req.Host = id + ".gw.localhost"
				req.Header.Set("Authorization", "Bearer "+token)
				resp, err := client.Do(req)
				if err != nil {
					failed.Store(err.Error())
					return
				}
				io.Copy(io.Discard, resp.Body) // so that the connection is reused
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Store(resp.Status)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f != nil {
		b.Fatalf("load on %d replicas: %v", len(targets), f)
	}
	return float64(n.Load()) / d.Seconds()
}

// cpuSeconds is the CPU time (user and system) the processes of ins have used so far.
func cpuSeconds(b *testing.B, ins ...*instance) float64 {
	var total float64
	for _, in := range ins {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", in.cmd.Process.Pid))
		if err != nil {
			b.Fatal(err)
		}
		// Fields after the command name, which is in parentheses: utime and stime are the
		// 12th and 13th, in clock ticks (100 a second on Linux).
		fields := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
		for _, f := range fields[11:13] {
			v, _ := strconv.ParseFloat(f, 64)
			total += v / 100
		}
	}
	return total
}
