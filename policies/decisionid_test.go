package policies

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/moltgate/moltgate/registry"
)

// ownerGateway is one gateway owned by u_owner, for decisions that allow and refuse.
var ownerGateway = []registry.Gateway{{ID: "gw1", Tenant: "t1", Owner: "u_owner", AuthMode: registry.AuthToken}}

func ownerRead(subject string) *Input {
	return &Input{Subject: Subject{Kind: SubjectUser, ID: subject}, Gateway: GatewayRef{ID: "gw1"},
		Request: Request{Method: "GET", Path: "/", Host: "gw1.gw.localhost"}, Protocol: ProtocolHTTP, Action: "http.read"}
}

// Issue 12: every decision (allow, deny, fail-closed policy error) has an id of its own and
// names the policy revision that decided; reused is false for decisions evaluated (the memo
// off here: memo_test.go tests what it reuses).
func TestDecisionsHaveIDAndRevision(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newTestEngine(t, Config{MemoSize: -1}, nil)
	if err := e.SetGateways(ctx, ownerGateway); err != nil {
		t.Fatal(err)
	}
	stale := newTestEngine(t, Config{Fresh: func() error { return errors.New("not following") }}, nil)
	tests := []struct {
		name    string
		e       *Engine
		in      *Input
		allow   bool
		wantErr bool
	}{
		{"allow", e, ownerRead("u_owner"), true, false},
		{"deny", e, ownerRead("u_stranger"), false, false},
		{"policy error", stale, ownerRead("u_owner"), false, true},
		{"nil input", e, nil, false, true},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 100 {
				d, err := tt.e.Decide(ctx, tt.in)
				if (err != nil) != tt.wantErr || d.Allow != tt.allow {
					t.Fatalf("got %+v, %v; want allow %v, error %v", d, err, tt.allow, tt.wantErr)
				}
				if len(d.ID) != 32 || strings.Trim(d.ID, "0123456789abcdef") != "" {
					t.Fatalf("id %q: want 32 hex digits", d.ID)
				}
				if seen[d.ID] {
					t.Fatalf("id %q given twice", d.ID)
				}
				seen[d.ID] = true
				if d.Revision == "" || d.Revision != tt.e.Revision() {
					t.Fatalf("revision: got %q, want %q", d.Revision, tt.e.Revision())
				}
				if d.Reused {
					t.Fatal("reused: got true, want false")
				}
			}
		})
	}
}

// Issue 12: the decision's JSON keeps its fields and adds id, revision and reused.
func TestDecisionJSON(t *testing.T) {
	t.Parallel()
	d := Decision{Allow: false, Reason: "not_a_member", Status: 403, ID: "0123", Revision: "abc"}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"allow":false,"reason":"not_a_member","status":403,"id":"0123","revision":"abc","reused":false}`
	if string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
}

// Issue 12: ids sort by the time they were made.
func TestDecisionIDsSortByTime(t *testing.T) {
	t.Parallel()
	a := NewDecisionID()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if b := NewDecisionID(); b[:12] != a[:12] {
			if b <= a {
				t.Fatalf("%s made after %s sorts before it", b, a)
			}
			return
		}
	}
	t.Fatal("the clock did not move in 5s")
}

// BenchmarkDecisionID measures what an id adds to a decision: the id alone, against a
// decision of the default set over 10,000 gateways measured in the same run.
func BenchmarkDecisionID(b *testing.B) {
	ctx := context.Background()
	e := newTestEngine(b, Config{Timeout: time.Second}, nil)
	if err := e.SetGateways(ctx, benchGateways(10_000)); err != nil {
		b.Fatal(err)
	}
	ins := benchInputs(10_000)
	b.ReportAllocs()
	for b.Loop() {
		_ = NewDecisionID()
	}
	b.StopTimer()
	if os.Getenv("MOLTGATE_BENCH_REPORT") != "1" || b.N < 1000 {
		return
	}
	const n = 20_000
	idt := latencies(n, func(int) { _ = NewDecisionID() })
	dt := latencies(n, func(i int) {
		if _, err := e.Decide(ctx, &ins[i%len(ins)]); err != nil {
			b.Fatal(err)
		}
	})
	id, d := percentile(idt, 50), percentile(dt, 50)
	fmt.Printf("bench policy_decision_id_p50_ns %d\n", id.Nanoseconds())
	fmt.Printf("bench policy_decision_id_share_of_decision %.3f (id p50 / decision p50, same run)\n", float64(id)/float64(d))
}
