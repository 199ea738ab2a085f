package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelSet is a Redis master, one replica Redis following it and a Redis Sentinel that
// watches them under MasterName: what a failover needs. Kill the master and the sentinel
// promotes the replica within a few seconds (it is declared down after 1.5 s: with less, a
// promoted master that stalls for a moment under a loaded test machine, serving a full sync
// to the old master come back, was failed over again, back and forth).
type SentinelSet struct {
	Master, Replica *RedisServer
	// Addr is host:port of the sentinel.
	Addr string
	// MasterName is the name the sentinel knows the master by.
	MasterName string
	sentinel   *redis.SentinelClient
}

// RedisSentinel starts a SentinelSet (none persists to disk) and waits until the replica is
// in sync and the sentinel knows it. It stops them all when the test ends.
func RedisSentinel(t testing.TB) *SentinelSet {
	t.Helper()
	s := &SentinelSet{Master: Redis(t), Replica: Redis(t), MasterName: "mg"}
	rr := redis.NewClient(&redis.Options{Addr: s.Replica.Addr})
	defer rr.Close()
	if err := rr.ReplicaOf(context.Background(), "127.0.0.1", fmt.Sprint(s.Master.Port)).Err(); err != nil {
		t.Fatalf("testenv: REPLICAOF: %v", err)
	}
	WaitUntil(t, "the replica Redis in sync", 10*time.Second, func() bool {
		info, _ := rr.Info(context.Background(), "replication").Result()
		return strings.Contains(info, "master_link_status:up")
	})

	dir := t.TempDir()
	port := FreePort(t)
	conf := filepath.Join(dir, "sentinel.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`port %d
bind 127.0.0.1
protected-mode no
dir %s
sentinel monitor %s 127.0.0.1 %d 1
sentinel down-after-milliseconds %[3]s 1500
sentinel failover-timeout %[3]s 3000
`, port, dir, s.MasterName, s.Master.Port)), 0o600); err != nil {
		t.Fatal(err)
	}
	Start(t, exec.Command("redis-server", conf, "--sentinel"), filepath.Join(dir, "sentinel.log"), 5*time.Second)
	s.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	s.sentinel = redis.NewSentinelClient(&redis.Options{Addr: s.Addr})
	t.Cleanup(func() { s.sentinel.Close() })
	WaitUntil(t, "the sentinel knowing the master and its replica", 15*time.Second, func() bool {
		rs, err := s.sentinel.Replicas(context.Background(), s.MasterName).Result()
		return err == nil && len(rs) == 1
	})
	return s
}

// MasterAddr is where the sentinel says the master is now, or an error.
func (s *SentinelSet) MasterAddr(ctx context.Context) (string, error) {
	addr, err := s.sentinel.GetMasterAddrByName(ctx, s.MasterName).Result()
	if err != nil {
		return "", err
	}
	return addr[0] + ":" + addr[1], nil
}
