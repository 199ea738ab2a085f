package policies

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moltgate/moltgate/registry"
)

// diffCount is how many generated inputs TestMemoDifferential decides with each engine, and
// the most TestMemoDifferentialCatchesIncompleteKey tries for each path left out with each
// of its seeds (it stops at the first wrong decision). It
// takes about 40 s of CPU with -race (all memo tests); BenchmarkMemoDifferential decides
// diffCountFull (`make bench`).
const (
	diffCount     = 10_000
	diffCountFull = 300_000
)

// tools are the tool names inputs draw from: none, plain, host-command, denied, owner's.
var tools = []string{"", "web_search", "exec", "process", "shell", "secrets", "terminal", "gateway", "weather", "Web-Search"}

// gen draws inputs and data changes from small vocabularies, so that inputs repeat (the memo
// hits) and every branch of the default rules is reached: owners, members of each role,
// strangers and empty ids; gateway tokens of the right and the wrong gateway; admin tokens
// and anonymous callers; every protocol; admin, owner and plain routes; owner, host-command,
// denied and listed tools; WebSocket methods of every class and configuration writes that
// open channels or not; addresses inside and outside allowlists; fresh and stale second
// factors; tenant organization admins.
type gen struct {
	r    *rand.Rand
	gws  []registry.Gateway
	pool []Input // inputs decided before
}

func newGen(seed uint64) *gen {
	g := &gen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	for i := range 6 {
		g.gws = append(g.gws, g.gateway(i))
	}
	return g
}

func pick[T any](r *rand.Rand, xs ...T) T { return xs[r.IntN(len(xs))] }

func (g *gen) gateway(i int) registry.Gateway {
	r := g.r
	gw := registry.Gateway{
		ID:       fmt.Sprintf("gw%d", i),
		Tenant:   pick(r, "org_a", "org_b"),
		Owner:    pick(r, "alice", "bob", "carol", "alice", "bob", "carol", ""),
		AuthMode: pick(r, registry.AuthToken, registry.AuthTrustedProxy),
		Members:  map[string]string{},
	}
	for _, u := range []string{"alice", "bob", "carol", "dave", "erin"} {
		if u != gw.Owner && r.IntN(3) > 0 {
			gw.Members[u] = pick(r, registry.RoleViewer, registry.RoleOperator, registry.RoleAdmin, registry.RoleAdmin)
		}
	}
	for _, id := range []string{"at_1", "at_2"} {
		if r.IntN(2) == 0 {
			if gw.APITokens == nil {
				gw.APITokens = map[string]registry.APIToken{}
			}
			gw.APITokens[id] = registry.APIToken{Role: pick(r, registry.RoleViewer, registry.RoleOperator, registry.RoleAdmin, "ghost")}
		}
	}
	if r.IntN(3) == 0 {
		gw.Allowlist = pick(r, []string{"10.0.0.0/8"}, []string{"10.0.0.0/8", "2001:db8::/32"}, []string{"192.0.2.1"})
	}
	if r.IntN(2) == 0 {
		gw.Skills.Deny = pick(r, []string{"shell"}, []string{"web_search"}, []string{"exec", "weather"})
	}
	if r.IntN(3) == 0 {
		gw.Skills.Allow = pick(r, []string{"web_search"}, []string{"web_search", "exec"}, []string{"weather", "process"})
	}
	return gw
}

func (g *gen) input() Input {
	r := g.r
	in := Input{
		Gateway:  GatewayRef{ID: pick(r, "gw0", "gw1", "gw2", "gw3", "gw4", "gw5", "gw9"), Tenant: pick(r, "", "org_a", "org_b")},
		ClientIP: pick(r, "10.1.2.3", "10.1.2.3", "10.1.2.3", "203.0.113.9", "2001:db8::7", "::ffff:10.9.9.9", "", "192.0.2.1"),
		Protocol: pick(r, ProtocolHTTP, ProtocolHTTP, ProtocolWS, ProtocolWS, ProtocolWS, ProtocolAdmin, "ftp"),
	}
	switch r.IntN(10) {
	case 0, 1, 2, 3, 4, 5:
		in.Subject = Subject{Kind: SubjectUser, ID: pick(r, "alice", "bob", "carol", "dave", "erin", "zed", "")}
	case 6:
		in.Subject = Subject{Kind: SubjectGatewayToken, ID: "tok", Gateway: pick(r, "gw0", "gw1", "gw2", "")}
	case 7:
		in.Subject = Subject{Kind: SubjectAPIToken, ID: pick(r, "at_1", "at_2", "at_3", ""), Gateway: pick(r, "gw0", "gw1", "gw2", "")}
	case 8:
		in.Subject = Subject{Kind: SubjectAnonymous}
	default:
		in.Subject = Subject{Kind: pick(r, SubjectAdminToken, "robot")}
	}
	in.Subject.SessionID = pick(r, "", "sess_1", "sess_2")
	if r.IntN(3) > 0 {
		in.Subject.OrgID, in.Subject.OrgRole = pick(r, "org_a", "org_b"), pick(r, "org:admin", "org:member")
	}
	in.Subject.FactorAges = g.factorAges()
	in.Request = Request{
		Method: pick(r, "GET", "POST", "DELETE"),
		Path: pick(r, "/", "/assets/index.js", "/api/v1/admin/rpc", "/API/V1/Admin/RPC", "/v1/chat/completions",
			"/__openclaw__/cap/abc/v1/responses", "/tools/invoke", "/__openclaw__/assistant-media/x.png"),
		Host: "gw.example.test",
	}
	if r.IntN(4) == 0 {
		in.Request.Route = pick(r, "/v1/responses", "/", "/api/v1/admin/rpc")
	}
	if r.IntN(5) == 0 {
		in.Request.Country = pick(r, "DE", "XX")
	}
	tool := pick(r, tools...)
	switch in.Protocol {
	case ProtocolAdmin:
		in.Action = pick(r, "admin.gateway.read", "admin.gateway.list", "admin.gateway.create", "admin.member.write",
			"admin.keys.read", "admin.audit.read", "admin.keys.rotate", "admin.keystore.rotate", "admin.provision.write",
			"admin.session.read")
	case ProtocolWS:
		if r.IntN(6) > 0 {
			in.Action = "ws.call"
			in.WS = &WSMessage{Method: pick(r, "chat.send", "chat.history", "sessions.list", "config.set", "config.patch",
				"config.apply", "secrets.list", "terminal.open", "vault.list", "tools.invoke", "skills.install", "models.list",
				"exec.approval.resolve")}
			if r.IntN(2) == 0 {
				in.WS.Tool = tool
			}
			in.WS.Skill = g.skill()
			if strings.HasPrefix(in.WS.Method, "config.") {
				in.WS.Channels, in.WS.ConfigUnreadable = g.channels()
			}
			break
		}
		fallthrough
	default:
		in.Action = pick(r, "http.read", "http.write", "tools.invoke", "ws.call", "admin.gateway.read", "")
		if in.Action == "tools.invoke" {
			in.Request.Tool = tool
		}
	}
	return in
}

// next returns the next input to decide: mostly one decided before (the memo may hit), often
// one decided before with one field drawn anew (a neighbour whose key differs in one path
// only, which is what finds a key that leaves that path out), sometimes a new one.
func (g *gen) next() Input {
	r := g.r
	if len(g.pool) < 64 || r.IntN(8) == 0 {
		return g.input()
	}
	in := g.pool[r.IntN(len(g.pool))]
	if r.IntN(2) == 0 {
		return in
	}
	return g.mutate(in)
}

// decided adds in to the pool next draws from: inputs that reach the later rules (allowed,
// or refused past the first checks, which most random inputs stop at) and some others, so
// that a neighbour's changed field is likely to change the decision.
func (g *gen) decided(in Input, d Decision) {
	switch d.Reason {
	case "unauthenticated", "unknown_gateway", "denied", "ip_not_allowed", "not_a_member", "platform_admin_only":
		if g.r.IntN(8) > 0 {
			return
		}
	}
	if len(g.pool) < 512 {
		g.pool = append(g.pool, in)
		return
	}
	g.pool[g.r.IntN(len(g.pool))] = in
}

// mutate returns in with one field taken from a newly drawn input (one with a WebSocket
// message when in has one).
func (g *gen) mutate(in Input) Input {
	f := g.input()
	for in.WS != nil && f.WS == nil {
		f = g.input()
	}
	if in.WS != nil {
		ws := *in.WS
		in.WS = &ws
	}
	n := 14
	if in.WS != nil {
		n = 19
	}
	switch g.r.IntN(n) {
	case 0:
		in.Subject.Kind = f.Subject.Kind
	case 1:
		in.Subject.ID = f.Subject.ID
	case 2:
		in.Subject.Gateway = f.Subject.Gateway
	case 3:
		in.Subject.OrgID = pick(g.r, "", "org_a", "org_b")
	case 4:
		in.Subject.OrgRole = pick(g.r, "", "org:admin", "org:member")
	case 5:
		in.Subject.FactorAges = g.factorAges()
	case 6:
		in.Subject.SessionID = f.Subject.SessionID
	case 7:
		in.Gateway.ID = f.Gateway.ID
	case 8:
		in.Gateway.Tenant = pick(g.r, "", "org_a", "org_b")
	case 9: // one of the two: the rules read each on its own
		if g.r.IntN(2) == 0 {
			in.Request.Path = f.Request.Path
		} else {
			in.Request.Route = f.Request.Route
		}
	case 10: // a tool call's neighbour names the next tool
		if g.r.IntN(2) == 0 || in.Action == "tools.invoke" {
			in.Request.Tool = tools[(slices.Index(tools, in.Request.Tool)+1)%len(tools)]
		} else {
			in.Request.Method, in.Request.Country = f.Request.Method, f.Request.Country
		}
	case 11:
		in.ClientIP = f.ClientIP
	case 12:
		in.Protocol = pick(g.r, ProtocolHTTP, ProtocolWS, ProtocolAdmin)
	case 13:
		in.Action = f.Action
	case 14:
		if in.WS != nil {
			in.WS.Method = f.WS.Method
		}
	case 15:
		if in.WS != nil {
			in.WS.Tool = f.WS.Tool
		}
	case 16:
		if in.WS != nil {
			in.WS.Skill = g.skill()
		}
	case 17:
		if in.WS != nil {
			in.WS.Channels, _ = g.channels()
		}
	default:
		if in.WS != nil {
			in.WS.ConfigUnreadable = !in.WS.ConfigUnreadable
		}
	}
	return in
}

func (g *gen) factorAges() []int {
	return pick(g.r, nil, []int{0, 5}, []int{3, -1}, []int{1, 10}, []int{1, 11}, []int{2}, []int{0, 0})
}

func (g *gen) skill() string { return pick(g.r, "", "", "weather", "shell", "web_search") }

// channels returns the channels section of a configuration write (nil: none), or that the
// write could not be read.
func (g *gen) channels() (any, bool) {
	switch g.r.IntN(4) {
	case 0:
		return nil, true
	case 1:
		return map[string]any{"telegram": map[string]any{"dmPolicy": pick(g.r, "open", "pairing")}}, false
	case 2:
		return map[string]any{"slack": map[string]any{"allowFrom": pick(g.r, []any{}, []any{"u1"})}}, false
	}
	return nil, false
}

// change applies one data change to every engine: a gateway replaced or deleted, or the
// platform admins set.
func (g *gen) change(ctx context.Context, t testing.TB, es ...*Engine) {
	r := g.r
	i := r.IntN(len(g.gws))
	switch r.IntN(4) {
	case 0, 1:
		g.gws[i] = g.gateway(i)
		for _, e := range es {
			if err := e.PutGateway(ctx, g.gws[i]); err != nil {
				t.Fatal(err)
			}
		}
	case 2:
		for _, e := range es {
			if err := e.DeleteGateway(ctx, g.gws[i].ID); err != nil {
				t.Fatal(err)
			}
		}
	default:
		admins := pick(r, []string{}, []string{"zed"}, []string{"dave", "zed"})
		for _, e := range es {
			if err := e.SetPlatformAdmins(ctx, admins); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// differential decides n generated inputs with memo (the memoised engine) and fresh (one
// that evaluates every decision), changing data about every 500 inputs, and returns the
// first input on which they disagree in any field but Reused, or in their errors.
func differential(t testing.TB, memo, fresh *Engine, n int, seed uint64) (mismatch string, hits int) {
	ctx := context.Background()
	g := newGen(seed)
	if err := memo.SetGateways(ctx, g.gws); err != nil {
		t.Fatal(err)
	}
	if err := fresh.SetGateways(ctx, g.gws); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if g.r.IntN(2000) == 0 {
			g.change(ctx, t, memo, fresh)
		}
		in := g.next()
		got, gotErr := memo.Decide(ctx, &in)
		want, wantErr := fresh.Decide(ctx, &in)
		if want.Reused {
			t.Fatalf("input %d: the engine without a memo reused a decision", i)
		}
		if got.Reused {
			hits++
		}
		if len(got.ID) != 32 || len(want.ID) != 32 || got.ID == want.ID {
			t.Fatalf("input %d: ids %q and %q, want one of its own each", i, got.ID, want.ID)
		}
		got.Reused, got.ID, want.ID = false, "", ""
		g.decided(in, want)
		if !reflect.DeepEqual(got, want) || fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
			return fmt.Sprintf("input %d %+v (ws %+v): memoised %+v (err %v), evaluated %+v (err %v)",
				i, in, in.WS, got, gotErr, want, wantErr), hits
		}
	}
	return "", hits
}

// TestMemoDifferential (issue 13): over generated inputs with data changes in between, the
// memoised engine and one that evaluates every decision agree on every field of every
// decision, and the memo is really used.
func TestMemoDifferential(t *testing.T) {
	t.Parallel()
	memo := newTestEngine(t, Config{Timeout: 10 * time.Second}, nil)
	fresh := newTestEngine(t, Config{Timeout: 10 * time.Second, MemoSize: -1}, nil)
	mismatch, hits := differential(t, memo, fresh, diffCount, 13)
	if mismatch != "" {
		t.Fatal(mismatch)
	}
	if hits < diffCount/4 {
		t.Fatalf("got %d reused decisions of %d, want at least a quarter: the test does not exercise the memo", hits, diffCount)
	}
}

// TestMemoDifferentialCatchesIncompleteKey (issue 13): the differential finds a wrong
// decision when any one input path the rules read is left out of the key, so it would catch
// a key derivation that missed one.
func TestMemoDifferentialCatchesIncompleteKey(t *testing.T) {
	t.Parallel()
	probe := newTestEngine(t, Config{}, nil)
	plan := probe.cur.Load().memo
	if len(plan.paths) < 10 {
		t.Fatalf("got key paths %s, want every input path the default rules read", plan)
	}
	for i, path := range plan.paths {
		name := (&memoPlan{paths: [][]*ast.Term{path}}).String()
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// Up to three seeds: a path the rules read on their own (the route, the tool) takes
			// a neighbour differing in it alone, and some draws have few.
			for seed := uint64(13); seed < 16; seed++ {
				memo := newTestEngine(t, Config{Timeout: 10 * time.Second}, nil)
				fresh := newTestEngine(t, Config{Timeout: 10 * time.Second, MemoSize: -1}, nil)
				set := *memo.cur.Load()
				set.memo = &memoPlan{paths: slices.Delete(slices.Clone(plan.paths), i, i+1)}
				memo.cur.Store(&set)
				if mismatch, _ := differential(t, memo, fresh, diffCount, seed); mismatch != "" {
					return
				}
			}
			t.Fatalf("with %s left out of the key, got no wrong decision in 3 × %d inputs, want one", name, diffCount)
		})
	}
}

// TestMemoInvalidation (issue 13): a decision is not reused across a data change or a
// policy reload, and is reused otherwise.
func TestMemoInvalidation(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dir := t.TempDir()
	write := func(reason string) {
		src := "package moltgate.custom\n\ndeny contains {\"reason\": \"" + reason + "\"} if input.request.path == \"/blocked\"\n"
		if err := os.WriteFile(filepath.Join(dir, "custom.rego"), []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("first")
	e := newTestEngine(t, Config{Dir: dir}, nil)
	gw := registry.Gateway{ID: "gw1", Owner: "alice", Members: map[string]string{"bob": registry.RoleViewer}}
	if err := e.PutGateway(ctx, gw); err != nil {
		t.Fatal(err)
	}
	in := Input{Subject: Subject{Kind: SubjectUser, ID: "bob"}, Gateway: GatewayRef{ID: "gw1"},
		Request: Request{Method: "GET", Path: "/blocked", Host: "h"}, Protocol: ProtocolHTTP, Action: "http.read"}
	decide := func(wantReason string, wantReused bool) {
		t.Helper()
		d, err := e.Decide(ctx, &in)
		if err != nil {
			t.Fatal(err)
		}
		if d.Reason != wantReason || d.Reused != wantReused {
			t.Fatalf("got %s reused %v, want %s reused %v", d.Reason, d.Reused, wantReason, wantReused)
		}
	}
	// A decision is stored the second time its key misses, and reused from the third.
	decide("first", false)
	decide("first", false)
	decide("first", true)
	gw.Members = map[string]string{}
	if err := e.PutGateway(ctx, gw); err != nil {
		t.Fatal(err)
	}
	decide("not_a_member", false)
	decide("not_a_member", false)
	decide("not_a_member", true)
	gw.Members = map[string]string{"bob": registry.RoleViewer}
	if err := e.PutGateway(ctx, gw); err != nil {
		t.Fatal(err)
	}
	decide("first", false)
	decide("first", false) // seen before this generation: the doorkeeper admits it
	write("second")
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	decide("second", false)
	decide("second", false)
	decide("second", true)
}

// TestMemoOffForNondeterministicRules (issue 13): a set whose rules read the clock is never
// memoised, and says why.
func TestMemoOffForNondeterministicRules(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := "package moltgate.authz\n\ndecision := {\"allow\": true, \"reason\": sprintf(\"%d\", [time.now_ns()])}\n"
	if err := os.WriteFile(filepath.Join(dir, "clock.rego"), []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	e, err := New(t.Context(), Config{Dir: dir}, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	reason, detail := e.MemoStatus()
	if reason != MemoOffNondeterministic || !strings.Contains(detail, "time.now_ns at ") || !strings.Contains(detail, "clock.rego:3") {
		t.Fatalf("got %q %q, want %q naming time.now_ns at clock.rego:3", reason, detail, MemoOffNondeterministic)
	}
	in := Input{Subject: Subject{Kind: SubjectUser, ID: "bob"}, Gateway: GatewayRef{ID: "gw1"}, Protocol: ProtocolHTTP, Action: "http.read"}
	for range 3 {
		d, err := e.Decide(t.Context(), &in)
		if err != nil {
			t.Fatal(err)
		}
		if d.Reused {
			t.Fatal("got a reused decision of a set that reads the clock")
		}
	}
	if got := testutil.ToFloat64(e.memos.off); got != 3 {
		t.Fatalf("got %v decisions counted off, want 3", got)
	}
	if got := testutil.ToFloat64(e.memos.disabled[MemoOffNondeterministic]); got != 1 {
		t.Fatalf("got moltgate_policy_memo_disabled{reason=%q} %v, want 1", MemoOffNondeterministic, got)
	}
}

// TestMemoOffByConfig: a negative size turns the memo off, and the metrics say so.
func TestMemoOffByConfig(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	e, err := New(t.Context(), Config{MemoSize: -1}, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	if reason, _ := e.MemoStatus(); reason != MemoOffConfig {
		t.Fatalf("got %q, want %q", reason, MemoOffConfig)
	}
	if got := testutil.ToFloat64(e.memos.disabled[MemoOffConfig]); got != 1 {
		t.Fatalf("got %v, want 1", got)
	}
}

// TestMemoBounded: the memo never holds more than its size, evicting the least recently used.
func TestMemoBounded(t *testing.T) {
	t.Parallel()
	m := newMemo(memoShards * 2)
	for i := range 10_000 {
		k := fmt.Appendf(nil, "k%d", i)
		m.put(k, 0, Decision{Reason: "r"}) // turned away
		m.put(k, 0, Decision{Reason: "r"}) // stored
	}
	if got := m.len(); got > memoShards*2 {
		t.Fatalf("got %d entries, want at most %d", got, memoShards*2)
	}
	// In each shard the most recent keys stay: the last one put is there.
	if _, ok := m.get([]byte("k9999"), 0); !ok {
		t.Fatal("the most recent entry was evicted")
	}
	if _, ok := m.get([]byte("k0"), 0); ok {
		t.Fatal("the oldest entry survived 10,000 puts into a memo of 128")
	}
	// A newer generation empties a shard on first touch; an older one is never stored.
	if _, ok := m.get([]byte("k9999"), 1); ok {
		t.Fatal("got an entry of generation 0 at generation 1")
	}
	m.put([]byte("k9999"), 0, Decision{})
	m.put([]byte("k9999"), 0, Decision{})
	if got := len(m.shard(m.hash([]byte("k9999"))).entries); got != 0 {
		t.Fatalf("got %d entries after a put decided on older data, want 0", got)
	}
}

// TestMemoAdmission (issue 13): a key is stored the second time it misses, never the first,
// so requests that are all new leave the memo empty; a key seen before is stored even after
// many others went by, unless one of them took its doorkeeper slot.
func TestMemoAdmission(t *testing.T) {
	t.Parallel()
	m := newMemo(memoShards * 16)
	key := func(i int) []byte { return fmt.Appendf(nil, "unique-%d", i) }
	for i := range 100_000 {
		m.put(key(i), 0, Decision{Reason: "r"})
	}
	if got := m.len(); got != 0 {
		t.Fatalf("got %d entries after 100,000 keys seen once each, want 0", got)
	}
	if _, ok := m.get(key(5), 0); ok {
		t.Fatal("got a decision for a key put once")
	}
	hot := []byte("hot")
	m.put(hot, 0, Decision{Reason: "hot"})
	if _, ok := m.get(hot, 0); ok {
		t.Fatal("got a decision for a key put once")
	}
	m.put(hot, 0, Decision{Reason: "hot"})
	if d, ok := m.get(hot, 0); !ok || d.Reason != "hot" {
		t.Fatalf("got %+v %v for a key put twice, want its decision", d, ok)
	}
	// A bucket forgets its oldest key when a fifth arrives. In a memo of the default size
	// (65,536 buckets of 4), 10,000 other keys push very few out: of 16 keys put once, then
	// once again after those, at least half are admitted.
	m = newMemo(DefaultMemoSize)
	admitted := 0
	for i := range 16 {
		m.put(key(1_000_000+i), 0, Decision{})
	}
	for i := range 10_000 {
		m.put(key(2_000_000+i), 0, Decision{})
	}
	for i := range 16 {
		k := key(1_000_000 + i)
		m.put(k, 0, Decision{})
		if _, ok := m.get(k, 0); ok {
			admitted++
		}
	}
	if admitted < 8 {
		t.Fatalf("%d of 16 keys seen 10,000 keys earlier were admitted, want at least 8", admitted)
	}
	// Hot keys that share a doorkeeper bucket, more of them than it has ways, coming round
	// in a fixed order, are all stored within a few rounds: a bucket that gave up its oldest
	// would have each push out the next forever.
	m = newMemo(memoShards * 2 * doorWays) // 2 × doorWays entries a shard, 4 buckets
	var same [][]byte                      // 2 × doorWays keys of shard 0, bucket 0
	for i := 0; len(same) < 2*doorWays; i++ {
		if k := key(3_000_000 + i); m.hash(k)%(memoShards*4) == 0 {
			same = append(same, k)
		}
	}
	stored := func() int {
		n := 0
		for _, k := range same {
			if _, ok := m.get(k, 0); ok {
				n++
			}
		}
		return n
	}
	for round := 0; round < 20 && stored() < len(same); round++ {
		for _, k := range same {
			m.put(k, 0, Decision{Reason: "r"})
		}
	}
	if got := stored(); got != len(same) {
		t.Fatalf("%d of %d keys of one bucket stored after 20 rounds, want all", got, len(same))
	}
}
