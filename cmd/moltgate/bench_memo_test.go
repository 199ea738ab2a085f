package main_test

// BenchmarkProxyMemo is the decision memo's part of `make bench` (issue 13): wrk drives
// three request mixes through `moltgate serve` (10,000 gateways, Clerk JWT on every
// request, policy, audit on) and, in the same run, through a plain httputil.ReverseProxy:
//
//  1. dashboard: a Control UI page load's requests (the page, its script, style, icon,
//     manifest and the avatar), replayed by the three users of each of 1,000 gateways;
//  2. unique: the same, but every request names a path never seen before, so the memo
//     never hits;
//  3. memo off: the dashboard and the unique mixes through a moltgate with
//     policies.memo.size 0.
//
// It prints each mix's requests/s against the plain proxy, the memo's hit rate per mix
// (from moltgate's own moltgate_policy_memo_lookups_total) and the unique mix's rate with
// the memo against without (what the memo costs when it never hits).

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moltgate/moltgate/proxy/authn/clerktest"
)

// dashboardPaths are the requests of one Control UI page load.
var dashboardPaths = []string{"/", "/assets/index-BkU1c9.js", "/assets/index-D4x0aQ.css",
	"/favicon.svg", "/manifest.webmanifest", "/avatar/main"}

// memoScript writes wrk's Lua script for a mix: every request goes to one of the first
// gateways gateways, as one of the users (bearer tokens), for one of dashboardPaths; with
// unique, each path gets a suffix no other request of the benchmark has.
func memoScript(b *testing.B, dir string, gateways int, tokens []string, unique bool) string {
	var sb strings.Builder
	sb.WriteString("local hosts = {")
	for i := range gateways {
		fmt.Fprintf(&sb, "%q,", fmt.Sprintf("gw%05d.gw.localhost", i*(10_000/gateways)))
	}
	sb.WriteString("}\nlocal auths = {")
	for _, t := range tokens {
		fmt.Fprintf(&sb, "%q,", "Bearer "+t)
	}
	sb.WriteString("}\nlocal paths = {")
	for _, p := range dashboardPaths {
		fmt.Fprintf(&sb, "%q,", p)
	}
	fmt.Fprintf(&sb, "}\nlocal unique = %v\n", unique)
	sb.WriteString(`local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
request = function()
  n = n + 1
  local p = paths[(n % #paths) + 1]
  local u = math.floor(n / #paths)
  local a = auths[(u % #auths) + 1]
  local h = hosts[(math.floor(u / #auths) % #hosts) + 1]
  if unique then
    -- wrk starts every run with fresh counters: the run's start time keeps runs apart.
    nonce = nonce or (tostring(os.time()) .. "-" .. tostring(tid))
    p = p .. "-" .. nonce .. "-" .. tostring(n)
  end
  return wrk.format("GET", p, {["Host"] = h, ["Authorization"] = a})
end
`)
	name := filepath.Join(dir, fmt.Sprintf("mix-%v.lua", unique))
	if err := os.WriteFile(name, []byte(sb.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	return name
}

var memoLookups = regexp.MustCompile(`(?m)^moltgate_policy_memo_lookups_total\{result="(hit|miss|off)"\} ([0-9.e+]+)$`)

// memoCounts reads moltgate_policy_memo_lookups_total from a moltgate's admin listener.
func memoCounts(b *testing.B, adminListen string) map[string]float64 {
	req, _ := http.NewRequest(http.MethodGet, "http://"+adminListen+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+benchAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	counts := map[string]float64{}
	for _, m := range memoLookups.FindAllStringSubmatch(string(body), -1) {
		counts[m[1]], _ = strconv.ParseFloat(m[2], 64)
	}
	if len(counts) == 0 {
		b.Fatalf("no moltgate_policy_memo_lookups_total in /metrics (%s)", resp.Status)
	}
	return counts
}

// fleet is what the proxy benchmarks start from: a bench upstream, a plain ReverseProxy to
// it (baseline), a fake Clerk and a data directory seeded with gateways owned by user_bench.
type fleet struct {
	duration     time.Duration // of one measured wrk run: MOLTGATE_BENCH_DURATION, default 10s
	upstream     string
	baseline     string
	clerk        *clerktest.Server
	dir, dataDir string
	seeded       time.Duration // how long seeding took
}

func startFleet(b *testing.B, gateways int) fleet {
	b.Helper()
	if _, err := exec.LookPath("wrk"); err != nil {
		b.Fatal("wrk not found: apt-get install wrk (make bench installs it)")
	}
	f := fleet{duration: 10 * time.Second, clerk: clerktest.New(b), dir: b.TempDir()}
	if v, err := time.ParseDuration(os.Getenv("MOLTGATE_BENCH_DURATION")); err == nil {
		f.duration = v
	}
	f.upstream = startRole(b, "upstream", "")
	f.baseline = startRole(b, "baseline", f.upstream)
	f.dataDir = filepath.Join(f.dir, "data")
	start := time.Now()
	seedGateways(b, f.dataDir, f.upstream, gateways)
	f.seeded = time.Since(start)
	return f
}

// memoRounds is how many times BenchmarkProxyMemo measures each run.
const memoRounds = 4

func BenchmarkProxyMemo(b *testing.B) {
	f := startFleet(b, 10_000)
	duration, baseline, clerk, dir, dataDir := f.duration, f.baseline, f.clerk, f.dir, f.dataDir
	offDir := b.TempDir()
	offData := filepath.Join(offDir, "data")
	copyFiles(b, dataDir, offData, "master.key", "moltgate.db")

	listen, admin, _, _ := startBenchServe(b, dir, dataDir, clerkConfig(b, clerk))
	offListen, offAdmin, _, _ := startBenchServe(b, offDir, offData, clerkConfig(b, clerk)+"policies: {memo: {size: 0}}\n")

	var tokens []string
	for _, user := range []string{"user_bench", "user_m1", "user_m2"} { // owner, viewer, operator
		tokens = append(tokens, clerk.Mint(clerktest.Claims{Subject: user, Expiry: time.Now().Add(time.Hour)}))
	}
	dashboard := memoScript(b, dir, 1000, tokens, false)
	unique := memoScript(b, dir, 1000, tokens, true)

	type run struct {
		name, target, script, admin string
	}
	runs := []run{ // the runs compared are neighbours
		{"baseline_dashboard", baseline, dashboard, ""},
		{"dashboard", "http://" + listen, dashboard, admin},
		{"memo_off", "http://" + offListen, dashboard, offAdmin},
		{"memo_off_unique", "http://" + offListen, unique, offAdmin},
		{"unique", "http://" + listen, unique, admin},
		{"baseline_unique", baseline, unique, ""},
	}
	measure := func(r run, d time.Duration) (wrkResult, map[string]float64) {
		var before map[string]float64
		if r.admin != "" {
			before = memoCounts(b, r.admin)
		}
		res := wrk(b, "-t2", "-c64", "-d"+d.String(), "--latency", "-s", r.script, r.target)
		if r.admin == "" {
			return res, nil
		}
		after := memoCounts(b, r.admin)
		for k := range after {
			after[k] -= before[k]
		}
		return res, after
	}
	b.ResetTimer()
	for _, r := range runs { // warm up each
		measure(r, 2*time.Second)
	}
	// Measure each memoRounds times, interleaved, the order reversed every other round so
	// that each pair compared runs as often before its partner as after it. A ratio is the
	// median of its rounds' ratios, each of two runs close in time: the machine's drift
	// cancels, where the unique mix with and without the memo differ by less than two
	// runs of one of them often do. Lookups are summed over the rounds.
	var rounds []map[string]wrkResult
	lookups := map[string]map[string]float64{}
	for i := range memoRounds {
		order := slices.Clone(runs)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		round := map[string]wrkResult{}
		for _, r := range order {
			res, counts := measure(r, duration)
			round[r.name] = res
			if lookups[r.name] == nil {
				lookups[r.name] = map[string]float64{}
			}
			for k, v := range counts {
				lookups[r.name][k] += v
			}
		}
		rounds = append(rounds, round)
	}
	b.StopTimer()
	hitRate := func(name string) float64 {
		c := lookups[name]
		return c["hit"] / max(1, c["hit"]+c["miss"]+c["off"])
	}
	// of returns the median over the rounds of f, and its range.
	of := func(f func(map[string]wrkResult) float64) (med, lo, hi float64) {
		var xs []float64
		for _, r := range rounds {
			xs = append(xs, f(r))
		}
		slices.Sort(xs)
		n := len(xs)
		return (xs[(n-1)/2] + xs[n/2]) / 2, xs[0], xs[n-1]
	}
	rps := func(name string) float64 {
		m, _, _ := of(func(r map[string]wrkResult) float64 { return r[name].rps })
		return m
	}
	ratio := func(name, base string) string {
		m, lo, hi := of(func(r map[string]wrkResult) float64 { return r[name].rps / r[base].rps })
		return fmt.Sprintf("%.2f (%.2f-%.2f)", m, lo, hi)
	}
	p99 := func(name string) float64 {
		m, _, _ := of(func(r map[string]wrkResult) float64 { return float64(r[name].p99) / 1e3 })
		return m
	}
	lines := []string{
		fmt.Sprintf("bench proxy_memo_rounds %d (each figure: the median over the rounds, the range in brackets)", memoRounds),
		fmt.Sprintf("bench proxy_memo_dashboard_rps %.0f vs %.0f: ratio %s (target >= 0.80), memo hit rate %.3f",
			rps("dashboard"), rps("baseline_dashboard"), ratio("dashboard", "baseline_dashboard"), hitRate("dashboard")),
		fmt.Sprintf("bench proxy_memo_unique_rps %.0f vs %.0f: ratio %s, memo hit rate %.3f",
			rps("unique"), rps("baseline_unique"), ratio("unique", "baseline_unique"), hitRate("unique")),
		fmt.Sprintf("bench proxy_memo_off_rps %.0f vs %.0f: ratio %s, memo hit rate %.3f",
			rps("memo_off"), rps("baseline_dashboard"), ratio("memo_off", "baseline_dashboard"), hitRate("memo_off")),
		fmt.Sprintf("bench proxy_memo_off_unique_rps %.0f vs %.0f: ratio %s",
			rps("memo_off_unique"), rps("baseline_unique"), ratio("memo_off_unique", "baseline_unique")),
		fmt.Sprintf("bench proxy_memo_unique_vs_off %s (unique mix, memo on vs off: its cost when it never hits; target >= 0.95)",
			ratio("unique", "memo_off_unique")),
		fmt.Sprintf("bench proxy_memo_dashboard_p99_us %.0f vs %.0f", p99("dashboard"), p99("baseline_dashboard")),
	}
	for _, l := range lines {
		fmt.Println(l)
	}
	m, _, _ := of(func(r map[string]wrkResult) float64 { return r["dashboard"].rps / r["baseline_dashboard"].rps })
	b.ReportMetric(m, "dashboard-ratio")
}
