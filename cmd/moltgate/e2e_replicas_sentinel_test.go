package main_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
)

// sentinelPlaceholder stands for the Redis address in replicaConfig until the sentinel
// configuration replaces it.
const sentinelPlaceholder = "sentinel-placeholder:6379"

// startSentinelReplicas starts n `moltgate serve` whose store is the master set's sentinel
// names (store.redis.sentinel). Their audit events stay in their spools (the audit stream
// across a failover is TestAuditStreamAcrossSentinelFailover's).
func startSentinelReplicas(t *testing.T, n int, set *testenv.SentinelSet) ([]*instance, *clerktest.Server) {
	t.Helper()
	config, clerk := replicaConfig(t, sentinelPlaceholder, replicaOptions{})
	config = strings.NewReplacer(
		`redis: {address: "`+sentinelPlaceholder+`"}`,
		fmt.Sprintf(`redis: {sentinel: {master_name: %s, addresses: ["%s"]}}`, set.MasterName, set.Addr),
		`audit: {redis: {addr: "`+sentinelPlaceholder+`"}}`, "").Replace(config)
	if strings.Contains(config, sentinelPlaceholder) {
		t.Fatalf("replicaConfig changed: %s left in\n%s", sentinelPlaceholder, config)
	}
	out := make([]*instance, n)
	for i := range out {
		out[i] = startBinary(t, binary, []string{fmt.Sprintf("MOLTGATE_AUDIT_REPLICA=sen-%d", i)}, config)
	}
	return out, clerk
}

// answer is one proxied request's outcome.
type answer struct {
	status int
	reason string
}

// traffic sends GETs for a gateway to every replica in turn, with a credential, until stopped,
// and keeps each replica's answers.
type traffic struct {
	mu   sync.Mutex
	seen [][]answer
	stop func()
}

func startTraffic(t *testing.T, reps []*instance, id, token string) *traffic {
	tr := &traffic{seen: make([][]answer, len(reps))}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			for i, in := range reps {
				select {
				case <-stop:
					return
				default:
				}
				status, reason, err := proxyGet(in, id, "/", token)
				if err != nil {
					continue
				}
				tr.mu.Lock()
				tr.seen[i] = append(tr.seen[i], answer{status, reason})
				tr.mu.Unlock()
			}
		}
	}()
	tr.stop = sync.OnceFunc(func() { close(stop); <-done })
	t.Cleanup(tr.stop)
	return tr
}

// since returns each replica's answers from mark on, and a new mark.
func (tr *traffic) since(mark []int) ([][]answer, []int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out, next := make([][]answer, len(tr.seen)), make([]int, len(tr.seen))
	for i, s := range tr.seen {
		from := 0
		if mark != nil {
			from = mark[i]
		}
		out[i], next[i] = append([]answer(nil), s[from:]...), len(s)
	}
	return out, next
}

// TestReplicasAcrossSentinelFailover (issue 11): three `moltgate serve` on a Redis master
// watched by Redis Sentinel, with traffic flowing. The master is SIGKILLed: every replica
// refuses (503 view_stale) while it cannot vouch for its view, and answers nothing else; the
// sentinel promotes the replica Redis and every replica serves again with no restart. A member
// added and acknowledged just before the kill is there on all three (with Sentinel a write is
// acknowledged once a replica Redis has it). Once the old master is back (the sentinel makes
// it a replica), changes are acknowledged again and reach every replica. A change made while
// the replica Redis could not confirm it is refused, not acknowledged.
func TestReplicasAcrossSentinelFailover(t *testing.T) {
	const id, tenant, owner, late = "gwsen", "org_sentinel", "user_sen_owner", "user_sen_late"
	gw := testenv.SharedOpenClaw(t, testenv.OpenClawOptions{Token: gatewayToken})
	set := testenv.RedisSentinel(t)
	reps, clerk := startSentinelReplicas(t, 3, set)
	a, b, c := reps[0], reps[1], reps[2]

	if _, err := a.admin().Create(t.Context(), admin.CreateRequest{ID: id, Tenant: tenant, Owner: owner,
		Upstream: gw.URL, Token: gw.Token}); err != nil {
		t.Fatal(err)
	}
	tr := startTraffic(t, reps, id, gw.Token)
	testenv.WaitUntil(t, "traffic served by every replica", 15*time.Second, func() bool {
		seen, _ := tr.since(nil)
		for _, s := range seen {
			if len(s) == 0 || s[len(s)-1].status != http.StatusOK {
				return false
			}
		}
		return true
	})

	// Acknowledged just before the crash: the replica Redis has it.
	if _, err := b.admin().SetMember(t.Context(), id, late, "viewer"); err != nil {
		t.Fatal(err)
	}
	// A change the replica Redis does not confirm (it is paused, as if cut off) is not
	// acknowledged: the failover could lose it.
	rr := redis.NewClient(&redis.Options{Addr: set.Replica.Addr})
	defer rr.Close()
	if err := rr.ClientPause(t.Context(), 2*time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.admin().SetMember(t.Context(), id, "user_sen_unconfirmed", "viewer"); err == nil {
		t.Error("a change the replica Redis did not confirm was acknowledged")
	}
	set.Master.Kill()
	_, mark := tr.since(nil)
	for i, in := range reps {
		testenv.WaitUntil(t, fmt.Sprintf("replica %d refusing while the master is gone", i), 10*time.Second, func() bool {
			status, reason, err := proxyGet(in, id, "/", gw.Token)
			return err == nil && status == http.StatusServiceUnavailable && reason == "view_stale"
		})
	}
	for i, in := range reps {
		testenv.WaitUntil(t, fmt.Sprintf("replica %d serving again on the promoted Redis", i), 60*time.Second, func() bool {
			status, _, err := proxyGet(in, id, "/", gw.Token)
			return err == nil && status == http.StatusOK
		})
		if status, body := readyz(in); status != http.StatusOK {
			t.Errorf("replica %d /readyz after the failover: %d %q", i, status, body)
		}
	}
	during, _ := tr.since(mark)
	for i, s := range during {
		for _, r := range s {
			if r.status != http.StatusOK && (r.status != http.StatusServiceUnavailable || r.reason != "view_stale") {
				t.Errorf("replica %d answered %d %q across the failover, want 200 or 503 view_stale", i, r.status, r.reason)
			}
		}
	}
	tr.stop()
	if addr, err := set.MasterAddr(t.Context()); err != nil || addr != set.Replica.Addr {
		t.Fatalf("master after the failover: %q %v, want the replica Redis %s", addr, err, set.Replica.Addr)
	}

	lateBearer := clerk.Mint(clerktest.Claims{Subject: late})
	for i, in := range reps {
		if status, reason, err := proxyGet(in, id, "/", lateBearer); err != nil || status != http.StatusOK {
			t.Errorf("replica %d: the member acknowledged before the kill: %d %q %v, want 200", i, status, reason, err)
		}
	}

	// The old master comes back empty, as a replica of the new one (what the sentinel does
	// too, about 15 s later), and writes are acknowledged again.
	set.Master.Restart()
	om := redis.NewClient(&redis.Options{Addr: set.Master.Addr})
	defer om.Close()
	host, port, _ := strings.Cut(set.Replica.Addr, ":")
	if err := om.ReplicaOf(t.Context(), host, port).Err(); err != nil {
		t.Fatal(err)
	}
	const after = "user_sen_after"
	testenv.WaitUntil(t, "a change acknowledged after the failover", 60*time.Second, func() bool {
		_, err := a.admin().SetMember(t.Context(), id, after, "viewer")
		return err == nil
	})
	afterBearer := clerk.Mint(clerktest.Claims{Subject: after})
	for i, in := range reps {
		testenv.WaitUntil(t, fmt.Sprintf("replica %d: the change after the failover", i), 5*time.Second, func() bool {
			status, _, err := proxyGet(in, id, "/", afterBearer)
			return err == nil && status == http.StatusOK
		})
		if status, _, err := proxyGet(in, id, "/", lateBearer); err != nil || status != http.StatusOK {
			t.Errorf("replica %d: the member acknowledged before the kill, after the old master's return: %d %v", i, status, err)
		}
	}
}
