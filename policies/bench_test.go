// Benchmarks of Engine.Decide.
//
//	go test -run '^$' -bench Decide10k -cpu 1 ./policies/
//
// BenchmarkDecide10kGateways loads 10,000 gateways and decides a mix of realistic requests
// (owner reads, member writes, tool calls, allowlisted gateways, refusals), timing every
// call. It reports p50-ns and p99-ns metrics. With MOLTGATE_BENCH_REPORT=1 in the
// environment it also prints, on the final run, lines for the `make bench` harness:
//
//	bench policy_decision_p50_us 12.3 (10,000 gateways, one core)
//	bench policy_decision_p99_us 30.1 (target < 50)
//
// followed by two baselines measured in the same run: OPA's floor (a constant policy) and a
// plain arithmetic loop as long as a decision, whose p99 shows the machine's own jitter.
package policies

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/moltgate/moltgate/registry"
)

// benchGateways returns n gateways: every one has an owner, three members and a skill deny
// list; every tenth has a two-entry allowlist (IPv4 and IPv6) and a skill allow list.
func benchGateways(n int) []registry.Gateway {
	gws := make([]registry.Gateway, n)
	for i := range gws {
		g := registry.Gateway{
			ID:       fmt.Sprintf("gw%05d", i),
			Tenant:   fmt.Sprintf("t%05d", i),
			Owner:    fmt.Sprintf("owner%05d", i),
			AuthMode: registry.AuthToken,
			Members: map[string]string{
				fmt.Sprintf("viewer%05d", i):   registry.RoleViewer,
				fmt.Sprintf("operator%05d", i): registry.RoleOperator,
				fmt.Sprintf("admin%05d", i):    registry.RoleAdmin,
			},
			Skills: registry.SkillRules{Deny: []string{"exec", "shell"}},
		}
		if i%10 == 0 {
			g.Allowlist = []string{"10.0.0.0/8", "2001:db8::/32"}
			g.Skills.Allow = []string{"web_search", "read_file"}
		}
		gws[i] = g
	}
	return gws
}

// benchKinds names the kinds of input benchInputs returns, in the order it repeats them.
var benchKinds = []string{"owner_read", "member_write", "token_tool_call", "viewer_write_refused", "stranger_refused"}

// benchInputs returns a mix of inputs over the gateways, one of each of benchKinds in turn.
func benchInputs(n int) []Input {
	var ins []Input
	for i := 0; i < n; i += 97 {
		id := fmt.Sprintf("gw%05d", i)
		req := Request{Method: "GET", Path: "/", Host: id + ".gw.example.test"}
		ip := "203.0.113.9"
		if i%10 == 0 {
			ip = "10.1.2.3"
		}
		ins = append(ins,
			Input{Subject: Subject{Kind: SubjectUser, ID: fmt.Sprintf("owner%05d", i), SessionID: "sess"},
				Gateway: GatewayRef{ID: id}, Request: req, ClientIP: ip, Protocol: ProtocolHTTP, Action: "http.read"},
			Input{Subject: Subject{Kind: SubjectUser, ID: fmt.Sprintf("operator%05d", i)},
				Gateway: GatewayRef{ID: id}, Request: Request{Method: "POST", Path: "/api", Host: req.Host}, ClientIP: ip, Protocol: ProtocolHTTP, Action: "http.write"},
			Input{Subject: Subject{Kind: SubjectGatewayToken, ID: "tok", Gateway: id},
				Gateway: GatewayRef{ID: id}, Request: Request{Method: "POST", Path: "/tools/invoke", Host: req.Host, Tool: "web_search"}, ClientIP: ip, Protocol: ProtocolHTTP, Action: "tools.invoke"},
			Input{Subject: Subject{Kind: SubjectUser, ID: fmt.Sprintf("viewer%05d", i)},
				Gateway: GatewayRef{ID: id}, Request: Request{Method: "DELETE", Path: "/x", Host: req.Host}, ClientIP: ip, Protocol: ProtocolHTTP, Action: "http.write"},
			Input{Subject: Subject{Kind: SubjectUser, ID: "stranger"},
				Gateway: GatewayRef{ID: id}, Request: req, ClientIP: "2001:db8::7", Protocol: ProtocolHTTP, Action: "http.read"},
		)
	}
	return ins
}

func BenchmarkDecide10kGateways(b *testing.B) {
	const n = 10_000
	ctx := context.Background()
	// A generous limit: a benchmark measures latency, it must not fail on one slow call.
	// The memo is off: this measures evaluation (BenchmarkDecideMemo measures the memo).
	e := newTestEngine(b, Config{Timeout: time.Second, MemoSize: -1}, nil)
	if err := e.SetGateways(ctx, benchGateways(n)); err != nil {
		b.Fatal(err)
	}
	ins := benchInputs(n)
	for i := range ins { // warm up, and make sure the mix really decides
		if _, err := e.Decide(ctx, &ins[i]); err != nil {
			b.Fatal(err)
		}
	}
	times := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		in := &ins[i%len(ins)]
		start := time.Now()
		_, err := e.Decide(ctx, in)
		times = append(times, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	p50, p99 := percentile(times, 50), percentile(times, 99)
	b.ReportMetric(float64(p50.Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(p99.Nanoseconds()), "p99-ns")
	if os.Getenv("MOLTGATE_BENCH_REPORT") != "1" || len(times) < 1000 {
		return
	}
	fmt.Printf("bench policy_decision_p50_us %.1f (10,000 gateways, one core)\n", us(p50))
	fmt.Printf("bench policy_decision_p99_us %.1f (target < 50)\n", us(p99))

	// Two baselines in the same run, to read the figures above against. The floor is OPA's
	// own cost per query: a policy whose decision is a constant, evaluated by the same engine
	// on the same inputs. The loop is plain arithmetic that runs as long as a decision's
	// median: its p99 is what this machine alone adds to a p99.
	floor := floorEngine(b, n)
	ft := latencies(len(times), func(i int) {
		if _, err := floor.Decide(ctx, &ins[i%len(ins)]); err != nil {
			b.Fatal(err)
		}
	})
	fmt.Printf("bench policy_floor_p50_us %.1f (constant decision: OPA's cost per query)\n", us(percentile(ft, 50)))
	fmt.Printf("bench policy_floor_p99_us %.1f\n", us(percentile(ft, 99)))
	fmt.Printf("bench policy_decision_vs_floor_p50 %.1f\n", float64(p50)/float64(percentile(ft, 50)))
	rounds := spinRounds(p50)
	ct := latencies(len(times), func(int) { spin(rounds) })
	fmt.Printf("bench cpu_loop_p50_us %.1f (arithmetic only, no allocation)\n", us(percentile(ct, 50)))
	fmt.Printf("bench cpu_loop_p99_us %.1f\n", us(percentile(ct, 99)))
}

// floorEngine returns an engine over n gateways whose policy decides a constant, evaluated
// every time.
func floorEngine(b *testing.B, n int) *Engine {
	dir := b.TempDir()
	const src = "package moltgate.authz\n\ndecision := {\"allow\": true, \"reason\": \"floor\"}\n"
	if err := os.WriteFile(filepath.Join(dir, "floor.rego"), []byte(src), 0o600); err != nil {
		b.Fatal(err)
	}
	e := newTestEngine(b, Config{Dir: dir, Timeout: time.Second, MemoSize: -1}, nil) // a memo would reuse its one decision
	if err := e.SetGateways(context.Background(), benchGateways(n)); err != nil {
		b.Fatal(err)
	}
	return e
}

// latencies times n calls of fn.
func latencies(n int, fn func(i int)) []time.Duration {
	ts := make([]time.Duration, n)
	for i := range ts {
		start := time.Now()
		fn(i)
		ts[i] = time.Since(start)
	}
	return ts
}

var spinSink uint64

// spin does rounds steps of a linear congruential generator: work with no memory traffic.
func spin(rounds int) {
	x := spinSink
	for range rounds {
		x = x*6364136223846793005 + 1442695040888963407
	}
	spinSink = x
}

// spinRounds returns how many rounds of spin take about d (the median of 101 tries).
func spinRounds(d time.Duration) int {
	const probe = 100_000
	t := percentile(latencies(101, func(int) { spin(probe) }), 50)
	return max(1, int(float64(probe)*float64(d)/float64(t)))
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// BenchmarkPutGateway10k measures one incremental update with 10,000 gateways loaded.
func BenchmarkPutGateway10k(b *testing.B) {
	ctx := context.Background()
	e := newTestEngine(b, Config{}, nil)
	gws := benchGateways(10_000)
	if err := e.SetGateways(ctx, gws); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		g := gws[i%len(gws)]
		g.Members = map[string]string{"someone": registry.RoleViewer}
		if err := e.PutGateway(ctx, g); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeleteGateway10k measures one delete with 10,000 gateways loaded (OPA's store
// copies the object to remove a key, so this one is linear in the number of gateways).
func BenchmarkDeleteGateway10k(b *testing.B) {
	ctx := context.Background()
	e := newTestEngine(b, Config{}, nil)
	gws := benchGateways(10_000)
	if err := e.SetGateways(ctx, gws); err != nil {
		b.Fatal(err)
	}
	for i := 0; b.Loop(); i++ {
		g := gws[i%len(gws)]
		if err := e.DeleteGateway(ctx, g.ID); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := e.PutGateway(ctx, g); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}
