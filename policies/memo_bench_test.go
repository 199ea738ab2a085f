// Benchmarks of the exact decision memo (issue 13).
//
//	MOLTGATE_BENCH_REPORT=1 go test -run '^$' -bench 'Memo' -cpu 1 ./policies/
//
// BenchmarkDecideMemo times decisions that hit the memo, decisions that miss it (every
// input new) and decisions with the memo off, against the engine's own constant-decision
// cost measured in the same run, with 10,000 gateways loaded; and the memory the memo takes
// holding 10,000 gateways × 10 users' decisions. BenchmarkMemoDifferential runs the
// differential test at its full count (diffCountFull inputs).
package policies

import (
	"context"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moltgate/moltgate/registry"
)

func BenchmarkDecideMemo(b *testing.B) {
	const n = 10_000
	ctx := context.Background()
	memo := newTestEngine(b, Config{Timeout: time.Second}, nil)
	off := newTestEngine(b, Config{Timeout: time.Second, MemoSize: -1}, nil)
	for _, e := range []*Engine{memo, off} {
		if err := e.SetGateways(ctx, benchGateways(n)); err != nil {
			b.Fatal(err)
		}
	}
	floor := floorEngine(b, n)
	ins := benchInputs(n)
	for range 2 { // warm up: every input of the mix is memoised (the second time it misses)
		for i := range ins {
			if _, err := memo.Decide(ctx, &ins[i]); err != nil {
				b.Fatal(err)
			}
		}
	}
	decide := func(e *Engine, in *Input, wantReused bool) {
		d, err := e.Decide(ctx, in)
		if err != nil {
			b.Fatal(err)
		}
		if d.Reused != wantReused {
			b.Fatalf("got reused %v, want %v", d.Reused, wantReused)
		}
	}
	var hits []time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		in := &ins[i%len(ins)]
		start := time.Now()
		decide(memo, in, true)
		hits = append(hits, time.Since(start))
	}
	b.StopTimer()
	b.ReportMetric(float64(percentile(hits, 50).Nanoseconds()), "hit-p50-ns")
	if os.Getenv("MOLTGATE_BENCH_REPORT") != "1" || len(hits) < 1000 {
		return
	}
	// The other figures, interleaved so that the machine's noise hits all alike: a miss
	// (the input's path made unique, so the key is new), the memo off, and the floor.
	count := min(len(hits), 50_000)
	var miss, evaluated, floors []time.Duration
	missByKind := make([][]time.Duration, len(benchKinds))
	for i := range count {
		in := ins[i%len(ins)]
		in.Request.Path = fmt.Sprintf("/miss/%d", i)
		miss = append(miss, latencies(1, func(int) { decide(memo, &in, false) })[0])
		missByKind[i%len(ins)%len(benchKinds)] = append(missByKind[i%len(ins)%len(benchKinds)], miss[len(miss)-1])
		evaluated = append(evaluated, latencies(1, func(int) { decide(off, &in, false) })[0])
		floors = append(floors, latencies(1, func(int) { decide(floor, &in, false) })[0])
	}
	fp50, fp99 := percentile(floors, 50), percentile(floors, 99)
	line := func(name string, ts []time.Duration, note string) {
		p50, p99 := percentile(ts, 50), percentile(ts, 99)
		fmt.Printf("bench policy_memo_%s_p50_us %.1f (%.1f × floor)%s\n", name, us(p50), float64(p50)/float64(fp50), note)
		fmt.Printf("bench policy_memo_%s_p99_us %.1f (%.1f × floor)\n", name, us(p99), float64(p99)/float64(fp99))
	}
	fmt.Printf("bench policy_memo_floor_p50_us %.1f (constant decision, memo off: the engine's own cost per query)\n", us(fp50))
	fmt.Printf("bench policy_memo_floor_p99_us %.1f\n", us(fp99))
	line("hit", hits, "")
	line("miss", miss, " (target <= 3 × at p50)")
	line("off", evaluated, " (every decision evaluated)")
	var kinds []string
	for k, ts := range missByKind {
		kinds = append(kinds, fmt.Sprintf("%s %.1f", benchKinds[k], float64(percentile(ts, 50))/float64(fp50)))
	}
	fmt.Printf("bench policy_memo_miss_p50_by_kind %s (× floor; the mix is a fifth of each)\n", strings.Join(kinds, ", "))
	flatReference(b, n, off, floor)
	per := memoBytes(b)
	fmt.Printf("bench policy_memo_bytes_per_decision %.0f (10,000 gateways × 10 users, one decision each)\n", per)
	fmt.Printf("bench policy_memo_mib_10k_gateways_10_users %.1f\n", per*100_000/(1<<20))
}

// flatMemberWrite decides a member's write on a gateway without an allowlist, to no reserved
// route, with only the checks that let it through, written as one rule: what OPA charges
// for that logic alone, with none of the structure or the other refusals of the default set.
const flatMemberWrite = `package moltgate.authz

default decision := {"allow": false, "reason": "denied", "status": 403}

decision := {"allow": true, "reason": "member", "scopes": grant.scopes} if {
	input.protocol == "http"
	input.action == "http.write"
	input.subject.kind == "user"
	gw := data.gateways[input.gateway.id]
	gw.allowlist == []
	gw.owner != input.subject.id
	grant := data.roles[gw.members[input.subject.id]]
	input.action in grant.actions
	route := lower(input.request.path)
	not strings.any_prefix_match(route, data.http.admin_prefixes)
	not strings.any_prefix_match(route, data.http.owner_prefixes)
}
`

// flatReference times, interleaved, the members' writes of the mix on gateways without an
// allowlist as the default set (off: memo off) and as flatMemberWrite decide them, against
// the floor: how far the default rules are from the cheapest rule that makes the decision.
func flatReference(b *testing.B, n int, off, floor *Engine) {
	dir := b.TempDir()
	files := map[string][]byte{"flat.rego": []byte(flatMemberWrite)}
	for _, name := range []string{"roles.json", "http.json"} {
		data, err := fs.ReadFile(Default(), name)
		if err != nil {
			b.Fatal(err)
		}
		files[name] = data
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	flat := newTestEngine(b, Config{Dir: dir, Timeout: time.Second, MemoSize: -1}, nil)
	if err := flat.SetGateways(context.Background(), benchGateways(n)); err != nil {
		b.Fatal(err)
	}
	var writes []Input
	for _, in := range benchInputs(n) {
		if in.Action == "http.write" && strings.HasPrefix(in.Subject.ID, "operator") && in.ClientIP != "10.1.2.3" {
			writes = append(writes, in)
		}
	}
	decide := func(e *Engine, in *Input) {
		d, err := e.Decide(context.Background(), in)
		if err != nil || !d.Allow || d.Reason == "denied" {
			b.Fatalf("%+v: got %+v, %v; want allowed", in, d, err)
		}
	}
	var floors, flats, rules []time.Duration
	for i := range 30_000 {
		in := &writes[i%len(writes)]
		floors = append(floors, latencies(1, func(int) { decide(floor, in) })[0])
		flats = append(flats, latencies(1, func(int) { decide(flat, in) })[0])
		rules = append(rules, latencies(1, func(int) { decide(off, in) })[0])
	}
	fp50 := percentile(floors, 50)
	fmt.Printf("bench policy_flat_member_write_p50_us %.1f (%.1f × floor %.1f): a member's write decided by one rule doing only the checks that let it through\n",
		us(percentile(flats, 50)), float64(percentile(flats, 50))/float64(fp50), us(fp50))
	fmt.Printf("bench policy_default_member_write_p50_us %.1f (%.1f × floor): the same writes, default rules, memo off\n",
		us(percentile(rules, 50)), float64(percentile(rules, 50))/float64(fp50))
}

// memoBytes returns the heap one memoised decision takes: what the memo holding 100,000
// decisions of 10,000 gateways × 10 users frees when it is dropped, divided by that.
func memoBytes(b *testing.B) float64 {
	const gateways, users = 10_000, 10
	ctx := context.Background()
	// Room to spare: the shards fill unevenly, and none may evict here.
	e := newTestEngine(b, Config{Timeout: time.Second, MemoSize: 2 * gateways * users}, nil)
	gws := benchGateways(gateways)
	for i := range gws {
		for u := range users - 4 {
			gws[i].Members[fmt.Sprintf("user%d-%05d", u, i)] = registry.RoleOperator
		}
	}
	if err := e.SetGateways(ctx, gws); err != nil {
		b.Fatal(err)
	}
	ins := make([]Input, 0, gateways*users)
	for _, g := range gws {
		users := append([]string{g.Owner}, slices.Collect(maps.Keys(g.Members))...)
		for _, u := range users {
			ins = append(ins, Input{Subject: Subject{Kind: SubjectUser, ID: u, SessionID: "sess_" + u},
				Gateway: GatewayRef{ID: g.ID}, ClientIP: "10.1.2.3", Protocol: ProtocolHTTP, Action: "http.read",
				Request: Request{Method: "GET", Path: "/", Host: g.ID + ".gw.example.test"}})
		}
	}
	// Each is stored the second time it misses while the doorkeeper still remembers it: a
	// few, whose doorkeeper bucket is crowded, need more rounds.
	for range 3 {
		for i := range ins {
			if _, err := e.Decide(ctx, &ins[i]); err != nil {
				b.Fatal(err)
			}
		}
	}
	held := e.memos.memo.len()
	if held < len(ins)*99/100 || held > len(ins) {
		b.Fatalf("got %d decisions memoised, want at least 99 %% of %d", held, len(ins))
	}
	// The memo's share of the live heap: what emptying it frees, nothing else changing.
	full := liveHeap()
	e.memos.memo = newMemo(1)
	empty := liveHeap()
	runtime.KeepAlive(e)
	return float64(full-empty) / float64(held)
}

func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkMemoDifferential is TestMemoDifferential at full count: diffCountFull generated
// inputs, data changing in between, decided by the memoised engine and by one that
// evaluates every decision; any disagreement fails it.
func BenchmarkMemoDifferential(b *testing.B) {
	for b.Loop() {
		memo := newTestEngine(b, Config{Timeout: 10 * time.Second}, nil)
		fresh := newTestEngine(b, Config{Timeout: 10 * time.Second, MemoSize: -1}, nil)
		mismatch, hits := differential(b, memo, fresh, diffCountFull, 13)
		if mismatch != "" {
			b.Fatal(mismatch)
		}
		if os.Getenv("MOLTGATE_BENCH_REPORT") == "1" {
			fmt.Printf("bench policy_memo_differential_inputs %d (memoised and evaluated agree on every field; %d reused)\n", diffCountFull, hits)
		}
	}
}
