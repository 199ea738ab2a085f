package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moltgate/moltgate/internal/testenv"
)

// openSentinel opens the store on set's master through its sentinel.
func openSentinel(t *testing.T, set *testenv.SentinelSet) *Redis {
	t.Helper()
	r, err := OpenRedis(t.Context(), RedisConfig{Sentinel: &SentinelConfig{MasterName: set.MasterName, Addrs: []string{set.Addr}},
		Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestFollowerAcrossSentinelFailover: on a master watched by Redis Sentinel, a replica's
// view fails closed while the master is gone, and is fresh again with no restart once the
// sentinel has promoted the replica Redis, which the store's failover client then writes to;
// a write acknowledged just before the crash is still there: with Sentinel, a write is
// acknowledged only once the replica Redis has it (issue 11).
func TestFollowerAcrossSentinelFailover(t *testing.T) {
	set := testenv.RedisSentinel(t)
	r := openSentinel(t, set)
	var v view
	f := follow(t, r, &v, time.Second)
	if err := r.Put("b", "before", []byte("v")); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, "the change applied", 5*time.Second, func() bool { got, _ := v.snapshot(); return len(got) == 1 })

	set.Master.Kill()
	testenv.WaitUntil(t, "the view stale", 10*time.Second, func() bool { return errors.Is(f.Fresh(), ErrStale) })
	testenv.WaitUntil(t, "the view fresh on the promoted replica", 60*time.Second, func() bool { return f.Fresh() == nil })
	if err := r.Put("b", "after", []byte("v")); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("write after the failover, with no replica Redis left: %v, want ErrNotReplicated", err)
	}
	testenv.WaitUntil(t, "the change after the failover applied", 5*time.Second, func() bool {
		got, _ := v.snapshot()
		return len(got) > 0 && got[len(got)-1].Key == "after"
	})
	if _, err := r.Get("b", "before"); err != nil {
		t.Errorf("the write acknowledged before the failover: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if addr, err := set.MasterAddr(ctx); err != nil || addr != set.Replica.Addr {
		t.Errorf("master after the failover: %v %v, want the replica %s", addr, err, set.Replica.Addr)
	}
}

// TestSentinelWriteWaitsForReplica: with Sentinel, a write the replica Redis did not confirm
// is not acknowledged (ErrNotReplicated): a failover could lose it. Once the replica follows
// again, writes are acknowledged, and each is on the replica when it is (issue 11).
func TestSentinelWriteWaitsForReplica(t *testing.T) {
	set := testenv.RedisSentinel(t)
	r := openSentinel(t, set)
	rr := redis.NewClient(&redis.Options{Addr: set.Replica.Addr})
	t.Cleanup(func() { rr.Close() })

	for i := range 20 {
		key := string(rune('a' + i))
		if err := r.Put("b", key, []byte("v")); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if err := r.Swap("b", key, []byte("v"), []byte("w")); err != nil {
			t.Fatalf("swap %d: %v", i, err)
		}
	}
	// The replica stops following (as if cut off): nothing more is confirmed.
	if err := rr.ClientPause(t.Context(), 5*time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	for name, write := range map[string]func() error{
		"put":    func() error { return r.Put("b", "unconfirmed", []byte("v")) },
		"swap":   func() error { return r.Swap("b", "a", []byte("w"), []byte("x")) },
		"delete": func() error { return r.Delete("b", "b") },
	} {
		if err := write(); !errors.Is(err, ErrNotReplicated) {
			t.Errorf("%s with the replica Redis paused: %v, want ErrNotReplicated", name, err)
		}
	}
	// A write that changes nothing has nothing to confirm.
	if err := r.Delete("b", "never-written"); err != nil {
		t.Errorf("delete of a missing key with the replica paused: %v, want nil", err)
	}
}
