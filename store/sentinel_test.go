package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moltgate/moltgate/internal/testenv"
)

// TestFollowerAcrossSentinelFailover: on a master watched by Redis Sentinel, a replica's
// view fails closed while the master is gone, and is fresh again with no restart once the
// sentinel has promoted the replica Redis, which the store's failover client then writes to;
// a write acknowledged before the crash (and replicated) is still there (issue 11).
func TestFollowerAcrossSentinelFailover(t *testing.T) {
	master, replica := testenv.Redis(t), testenv.Redis(t)
	raw := func(addr string) *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { c.Close() })
		return c
	}
	rm, rr := raw(master.Addr), raw(replica.Addr)
	if err := rr.ReplicaOf(t.Context(), "127.0.0.1", fmt.Sprint(master.Port)).Err(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, "the replica in sync", 10*time.Second, func() bool {
		info, _ := rr.Info(t.Context(), "replication").Result()
		return strings.Contains(info, "master_link_status:up")
	})

	dir := t.TempDir()
	port := testenv.FreePort(t)
	conf := filepath.Join(dir, "sentinel.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`port %d
bind 127.0.0.1
protected-mode no
dir %s
sentinel monitor mg 127.0.0.1 %d 1
sentinel down-after-milliseconds mg 500
sentinel failover-timeout mg 3000
`, port, dir, master.Port)), 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.Start(t, exec.Command("redis-server", conf, "--sentinel"), filepath.Join(dir, "sentinel.log"), 5*time.Second)
	sentinelAddr := fmt.Sprintf("127.0.0.1:%d", port)
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinelAddr})
	t.Cleanup(func() { sc.Close() })
	testenv.WaitUntil(t, "the sentinel knowing the master and its replica", 15*time.Second, func() bool {
		rs, err := sc.Replicas(t.Context(), "mg").Result()
		return err == nil && len(rs) == 1
	})

	r, err := OpenRedis(t.Context(), RedisConfig{Sentinel: &SentinelConfig{MasterName: "mg", Addrs: []string{sentinelAddr}},
		Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	var v view
	f := follow(t, r, &v, time.Second)
	if err := r.Put("b", "before", []byte("v")); err != nil {
		t.Fatal(err)
	}
	// Acknowledged by the replica Redis too: what a failover keeps.
	if n, err := rm.Wait(t.Context(), 1, 5*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT: %d replicas, %v", n, err)
	}
	testenv.WaitUntil(t, "the change applied", 5*time.Second, func() bool { got, _ := v.snapshot(); return len(got) == 1 })

	master.Kill()
	testenv.WaitUntil(t, "the view stale", 10*time.Second, func() bool { return errors.Is(f.Fresh(), ErrStale) })
	testenv.WaitUntil(t, "the view fresh on the promoted replica", 60*time.Second, func() bool { return f.Fresh() == nil })
	if err := r.Put("b", "after", []byte("v")); err != nil {
		t.Fatalf("write after the failover: %v", err)
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
	if addr, err := sc.GetMasterAddrByName(ctx, "mg").Result(); err != nil || addr[1] != fmt.Sprint(replica.Port) {
		t.Errorf("master after the failover: %v %v, want the replica on port %d", addr, err, replica.Port)
	}
}
