package main_test

// BenchmarkProxy is the proxy part of `make bench`: wrk drives the same load through a plain
// httputil.ReverseProxy and through `moltgate serve` (10,000 gateways, Clerk JWT on every
// request, policy, audit on) to the same upstream, in one run, and prints each figure and
// the ratios on lines starting with "bench ". Both proxies and the upstream are separate
// processes (this test binary re-executed in a role), so each has its own runtime.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/proxy"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
	"github.com/moltgate/moltgate/registry"
	"github.com/moltgate/moltgate/store"
)

const benchRoleEnv = "MOLTGATE_BENCH_ROLE"

// benchRole runs this binary as a bench upstream or baseline proxy when asked to, and
// reports whether it did.
func benchRole() bool {
	role, addr := os.Getenv(benchRoleEnv), os.Getenv("MOLTGATE_BENCH_ADDR")
	var h http.Handler
	switch role {
	case "upstream":
		body := []byte(`{"ok":true,"status":"live"}`)
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.Write(body)
		})
	case "baseline":
		target, _ := url.Parse(os.Getenv("MOLTGATE_BENCH_UPSTREAM"))
		h = &httputil.ReverseProxy{
			Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
			Transport: proxy.NewTransport(proxy.TransportConfig{}),
		}
	default:
		return false
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	(&http.Server{Handler: h}).Serve(ln)
	return true
}

func startRole(b *testing.B, role, upstream string) string {
	b.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(b))
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), benchRoleEnv+"="+role, "MOLTGATE_BENCH_ADDR="+addr, "MOLTGATE_BENCH_UPSTREAM="+upstream)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitHTTP(b, "http://"+addr+"/")
	return "http://" + addr
}

func waitHTTP(b *testing.B, u string) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(u); err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatalf("%s did not answer", u)
}

// noSync stands in for the policy engine while gateways are written before serve starts;
// serve loads them into its own engine.
type noSync struct{}

func (noSync) PutGateway(context.Context, registry.Gateway) error { return nil }
func (noSync) DeleteGateway(context.Context, string) error        { return nil }

// seedGateways writes n gateways owned by user_bench into dataDir's store, sealed under the
// development master key that serve will load from the same place.
func seedGateways(b *testing.B, dataDir, upstream string, n int) {
	b.Helper()
	key, _, err := keystore.LoadOrCreateDevKey(filepath.Join(dataDir, "master.key"))
	if err != nil {
		b.Fatal(err)
	}
	ring, _ := keystore.NewKeyring(1, key)
	kv, err := store.OpenBolt(filepath.Join(dataDir, "moltgate.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer kv.Close()
	reg, err := registry.New(b.Context(), kv, keystore.New(ring), noSync{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		tok := fmt.Sprintf("%064x", i+1)
		g := registry.Gateway{ID: fmt.Sprintf("gw%05d", i), Tenant: fmt.Sprintf("tenant-%05d", i), Owner: "user_bench",
			Upstream: upstream, Members: map[string]string{"user_m1": "viewer", "user_m2": "operator"}}
		if _, err := reg.Create(b.Context(), g, tok); err != nil {
			b.Fatal(err)
		}
	}
}

// copyFiles copies the named files of src into dst (created), each with mode 0600.
func copyFiles(b *testing.B, src, dst string, names ...string) {
	b.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		b.Fatal(err)
	}
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, name), data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
}

type wrkResult struct {
	rps      float64
	p50, p99 time.Duration
}

var (
	wrkRPS     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkLatency = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	wrkErrors  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

func runWrk(b *testing.B, target, host, auth string, d time.Duration) wrkResult {
	b.Helper()
	return wrk(b, "-t2", "-c64", "-d"+d.String(), "--latency",
		"-H", "Host: "+host, "-H", "Authorization: Bearer "+auth, target+"/health")
}

// wrk runs wrk with args and reads its figures; a refused request fails the benchmark.
func wrk(b *testing.B, args ...string) wrkResult {
	b.Helper()
	out, err := exec.Command("wrk", args...).CombinedOutput()
	if err != nil {
		b.Fatalf("wrk: %v\n%s", err, out)
	}
	if m := wrkErrors.FindSubmatch(out); m != nil {
		b.Fatalf("wrk saw %s refused requests:\n%s", m[1], out)
	}
	var r wrkResult
	m := wrkRPS.FindSubmatch(out)
	if m == nil {
		b.Fatalf("wrk output:\n%s", out)
	}
	r.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	for _, l := range wrkLatency.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(string(l[2]), 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[string(l[3])]
		d := time.Duration(v * float64(unit))
		if string(l[1]) == "50" {
			r.p50 = d
		} else {
			r.p99 = d
		}
	}
	return r
}

func peakRSS(b *testing.B, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	b.Fatal("no VmHWM")
	return 0
}

func BenchmarkProxy(b *testing.B) {
	const gateways = 10_000
	f := startFleet(b, gateways)
	duration, baseline, clerk, dir, dataDir, seeded := f.duration, f.baseline, f.clerk, f.dir, f.dataDir, f.seeded

	// A second moltgate on a copy of the same data whose policy decides a constant: the
	// ratio it reaches is what OPA's cost per query alone leaves, whatever the rules say.
	// Its memo is off (it would reuse the one decision: BenchmarkProxyMemo measures the memo).
	floorDir := b.TempDir()
	floorData := filepath.Join(floorDir, "data")
	copyFiles(b, dataDir, floorData, "master.key", "moltgate.db")
	floorPolicy := filepath.Join(floorDir, "policy")
	os.Mkdir(floorPolicy, 0o700)
	os.WriteFile(filepath.Join(floorPolicy, "floor.rego"), []byte("package moltgate.authz\n\ndecision := {\"allow\": true, \"reason\": \"floor\"}\n"), 0o600)

	listen, _, cmd, _ := startBenchServe(b, dir, dataDir, clerkConfig(b, clerk))
	floorListen, _, _, _ := startBenchServe(b, floorDir, floorData, clerkConfig(b, clerk)+"policies: {dir: "+floorPolicy+", memo: {size: 0}}\n")

	jwt := clerk.Mint(clerktest.Claims{Subject: "user_bench", Expiry: time.Now().Add(time.Hour)})
	host := "gw04242.gw.localhost"
	targets := []string{baseline, "http://" + listen, "http://" + floorListen}
	b.ResetTimer()
	// Warm each, then measure each twice, interleaved, and keep the better run of each:
	// the machine's noise hits all alike.
	for _, t := range targets {
		runWrk(b, t, host, jwt, 2*time.Second)
	}
	best := make([]wrkResult, len(targets))
	for range 2 {
		for i, t := range targets {
			if r := runWrk(b, t, host, jwt, duration); r.rps > best[i].rps {
				best[i] = r
			}
		}
	}
	base, mg, floor := best[0], best[1], best[2]
	b.StopTimer()
	rss := peakRSS(b, cmd.Process.Pid)
	lines := []string{
		fmt.Sprintf("bench proxy_gateways %d (seeded in %v)", gateways, seeded.Round(time.Millisecond)),
		fmt.Sprintf("bench proxy_baseline_rps %.0f", base.rps),
		fmt.Sprintf("bench proxy_moltgate_rps %.0f", mg.rps),
		fmt.Sprintf("bench proxy_rps_ratio %.2f (target >= 0.80)", mg.rps/base.rps),
		fmt.Sprintf("bench proxy_baseline_p50_us %.0f", float64(base.p50)/1e3),
		fmt.Sprintf("bench proxy_moltgate_p50_us %.0f", float64(mg.p50)/1e3),
		fmt.Sprintf("bench proxy_baseline_p99_us %.0f", float64(base.p99)/1e3),
		fmt.Sprintf("bench proxy_moltgate_p99_us %.0f", float64(mg.p99)/1e3),
		fmt.Sprintf("bench proxy_added_p99_us %.0f", float64(mg.p99-base.p99)/1e3),
		fmt.Sprintf("bench moltgate_peak_rss_mib %.1f (10,000 gateways, under load)", rss),
		fmt.Sprintf("bench proxy_floor_policy_rps %.0f (moltgate with a constant-decision policy)", floor.rps),
		fmt.Sprintf("bench proxy_floor_policy_ratio %.2f", floor.rps/base.rps),
	}
	for _, l := range lines {
		fmt.Println(l)
	}
	b.ReportMetric(mg.rps/base.rps, "ratio")
	b.ReportMetric(rss, "peak-RSS-MiB")
}

// benchAdminToken is the admin token of the moltgate a benchmark starts.
var benchAdminToken = strings.Repeat("ab", 20)

// startBenchServe runs `moltgate serve` for a benchmark on fresh loopback ports with its
// data in dataDir, quiet logs and extra configuration appended, until the benchmark ends; it
// returns once /readyz answers.
func startBenchServe(b *testing.B, dir, dataDir, extra string) (listen, adminListen string, cmd *exec.Cmd, logs *bytes.Buffer) {
	b.Helper()
	adminTok := filepath.Join(dir, "admin.token")
	os.WriteFile(adminTok, []byte(benchAdminToken), 0o600)
	listen = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(b))
	adminListen = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(b))
	cfg := filepath.Join(dir, "moltgate.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("listen: %s\nadmin_listen: %s\ndata_dir: %s\nadmin_token: {file: %s}\nlog: {level: warn}\n",
		listen, adminListen, dataDir, adminTok)+extra), 0o600)
	logs = &bytes.Buffer{}
	cmd = exec.Command(binary, "serve", "--config", cfg)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitHTTP(b, "http://"+adminListen+"/readyz")
	return listen, adminListen, cmd, logs
}
