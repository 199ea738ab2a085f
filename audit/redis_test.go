package audit

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/moltgate/moltgate/internal/testenv"
)

func redisClient(t testing.TB, addr string) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 300 * time.Millisecond,
		ReadTimeout: 2 * time.Second, WriteTimeout: time.Second, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// redisPipeline starts a redis-server and a running spool of replica shipping to it, with
// an (empty) archive beside it for a Drainer.
func redisPipeline(t *testing.T, replica string, maxFileBytes int64) (*testenv.RedisServer, *redis.Client, *Archive, *FileLog) {
	t.Helper()
	srv := testenv.Redis(t)
	rdb := redisClient(t, srv.Addr)
	dir := t.TempDir()
	arch, err := OpenArchive(ArchiveConfig{Dir: filepath.Join(dir, "archive")}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	l, err := OpenFile(FileConfig{Dir: filepath.Join(dir, "spool"), MaxFileBytes: maxFileBytes, Replica: replica,
		Sinks: []Sink{NewRedisSink(rdb, replica)}}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	runLog(t, l)
	return srv, rdb, arch, l
}

// Issue 5: Redis killed mid-stream, restarted empty, and made slow: every acknowledged event
// reaches the archive exactly once, in a chain that verifies.
func TestRedisFaultsLoseNothing(t *testing.T) {
	srv, rdb, arch, l := redisPipeline(t, "r1", 16<<10)
	d := NewDrainer(rdb, arch, "archiver-1", quiet)
	d.MinIdle, d.Count = 100*time.Millisecond, 500
	ctx, cancel := context.WithCancel(context.Background())
	drained := make(chan struct{})
	go func() { d.Run(ctx, 20*time.Millisecond); close(drained) }()
	t.Cleanup(func() { cancel(); <-drained })

	var next atomic.Int64
	burst := func(n int) {
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range n / 8 {
					i := next.Add(1) - 1
					if err := l.Emit(context.Background(), Event{Type: TypeAdminChange, Outcome: "success",
						Details: map[string]string{"n": fmt.Sprint(i)}}); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
	}
	caughtUp := func(what string) {
		waitForState(t, what, func() (bool, string) {
			s, _ := l.Head()
			a, _ := arch.Head("r1")
			n, _ := rdb.XLen(t.Context(), StreamKey("r1")).Result()
			return a == s, fmt.Sprintf("spool head %d, archive head %d, stream length %d", s, a, n)
		})
	}

	burst(2000)
	caughtUp("first burst archived")

	// Killed mid-stream: events wait in the spool.
	var wg sync.WaitGroup
	wg.Go(func() { burst(4000) })
	waitFor(t, "some events of the burst", func() bool { return next.Load() > 2500 })
	srv.Kill()
	wg.Wait()
	burst(800)
	// The shipper must meet the dead server before it comes back: go-redis replaces a
	// connection the peer closed without an error, so a shipper that first runs after the
	// restart would never see Redis down.
	waitFor(t, "the shipper to find redis down", func() bool {
		return testutil.ToFloat64(l.m.sinkErrors.WithLabelValues("redis")) > 0
	})
	// While it is down, the lag shows at least the burst it missed.
	waitFor(t, "sink lag to count the events redis missed", func() bool {
		return testutil.ToFloat64(l.m.sinkLag.WithLabelValues("redis")) >= 800
	})
	// Restarted empty: the stream and group are gone; the spool sends again what the archive lacks.
	srv.Restart()
	caughtUp("archive after an empty restart")

	// Slow: Redis stops answering clients for a while, mid-burst.
	wg.Go(func() { burst(3000) })
	waitFor(t, "some events of the slow burst", func() bool { return next.Load() > 7500 })
	if err := rdb.Do(t.Context(), "CLIENT", "PAUSE", "700", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	caughtUp("archive after a slow redis")

	// Killed again and restarted empty before the archiver saw the last burst.
	cancel()
	<-drained
	burst(1000)
	waitFor(t, "redis to hold the last burst", func() bool {
		n, _ := rdb.XLen(t.Context(), StreamKey("r1")).Result()
		return n > 0 && next.Load() == 10800
	})
	srv.Kill()
	srv.Restart()
	waitForState(t, "archive after the last empty restart", func() (bool, string) {
		_, err := d.DrainOnce(t.Context())
		s, _ := l.Head()
		a, _ := arch.Head("r1")
		n, _ := rdb.XLen(t.Context(), StreamKey("r1")).Result()
		return err == nil && a == s, fmt.Sprintf("drain error %v, spool head %d, archive head %d, stream length %d", err, s, a, n)
	})

	if e := testutil.ToFloat64(l.m.sinkErrors.WithLabelValues("redis")); e == 0 {
		t.Fatal("no sink errors counted: redis was never down while events flowed")
	}
	checkMarkers(t, archivedMarkers(t, arch.Dir()), int(next.Load()))
	if _, err := VerifyArchive(arch.Dir(), VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyFiles(l.cfg.Dir, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyStreamNamesTampering(t *testing.T) {
	srv := testenv.Redis(t)
	rdb := redisClient(t, srv.Addr)
	tamper := map[string]struct {
		fn      func(ctx context.Context, key string)
		seq     uint64
		contain string
	}{
		"edited": {func(ctx context.Context, key string) {
			msgs, _ := rdb.XRange(ctx, key, "-", "+").Result()
			rdb.Del(ctx, key)
			for _, m := range msgs {
				line := m.Values["e"].(string)
				if m.ID == "5-0" {
					line = strings.Replace(line, `"success"`, `"deny"`, 1)
				}
				rdb.XAdd(ctx, &redis.XAddArgs{Stream: key, ID: m.ID, Values: []any{"e", line}})
			}
		}, 5, "edited"},
		"deleted":       {func(ctx context.Context, key string) { rdb.XDel(ctx, key, "5-0") }, 5, "missing"},
		"first deleted": {func(ctx context.Context, key string) { rdb.XDel(ctx, key, "1-0") }, 1, "deleted"},
	}
	for name, tc := range tamper {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			replica := strings.ReplaceAll(name, " ", "-")
			l, _ := OpenFile(FileConfig{Dir: t.TempDir(), Replica: replica, Sinks: []Sink{NewRedisSink(rdb, replica)}}, quiet)
			runLog(t, l)
			emitMarked(t, l, 0, 10)
			key := StreamKey(replica)
			waitFor(t, "stream", func() bool { n, _ := rdb.XLen(ctx, key).Result(); return n == 10 })
			if rep, err := VerifyStream(ctx, rdb, key, VerifyOptions{}); err != nil || rep.Events != 10 {
				t.Fatalf("before tampering: %+v, %v", rep, err)
			}
			tc.fn(ctx, key)
			_, err := VerifyStream(ctx, rdb, key, VerifyOptions{})
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Seq != tc.seq || !strings.Contains(ve.Why, tc.contain) {
				t.Fatalf("got %v, want seq %d named (%s)", err, tc.seq, tc.contain)
			}
		})
	}
}

// A Redis restarted empty while the replica is idle (every event shipped, none archived
// yet) is refilled from the spool without waiting for a new event: the shipper checks
// what the sink holds on every tick, not only when it has something new to send.
func TestRedisRestartedEmptyWhileIdleIsRefilled(t *testing.T) {
	srv, rdb, arch, l := redisPipeline(t, "idle", 0)
	emitMarked(t, l, 0, 300)
	key := StreamKey("idle")
	waitFor(t, "redis to hold all 300 events", func() bool { n, _ := rdb.XLen(t.Context(), key).Result(); return n == 300 })
	srv.Restart()
	waitFor(t, "the spool to send the 300 events again to the empty redis", func() bool {
		n, _ := rdb.XLen(t.Context(), key).Result()
		return n == 300
	})
	d := NewDrainer(rdb, arch, "archiver-idle", quiet)
	if _, err := d.DrainOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	checkMarkers(t, archivedMarkers(t, arch.Dir()), 300)
	if _, err := VerifyArchive(arch.Dir(), VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestQueryReadsEveryReplica (issue 11: `audit query` reads every replica's chain): with
// two replicas on one Redis and part of their events archived, a Reader over the archive and
// the Redis gives every event of both replicas once, each replica's in seq order.
func TestQueryReadsEveryReplica(t *testing.T) {
	srv := testenv.Redis(t)
	rdb := redisClient(t, srv.Addr)
	arch, err := OpenArchive(ArchiveConfig{Dir: filepath.Join(t.TempDir(), "archive")}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	replicas := []string{"rep-a", "rep-b"}
	logs := map[string]*FileLog{}
	for _, r := range replicas {
		l, err := OpenFile(FileConfig{Dir: t.TempDir(), Replica: r, Sinks: []Sink{NewRedisSink(rdb, r)}}, quiet)
		if err != nil {
			t.Fatal(err)
		}
		runLog(t, l)
		logs[r] = l
	}
	streamed := func(n int64) func() bool {
		return func() bool {
			for _, r := range replicas {
				if got, _ := rdb.XLen(t.Context(), StreamKey(r)).Result(); got != n {
					return false
				}
			}
			return true
		}
	}
	for _, r := range replicas {
		emitMarked(t, logs[r], 0, 5)
	}
	waitFor(t, "5 events in each stream", streamed(5))
	if _, err := NewDrainer(rdb, arch, "archiver-q", quiet).DrainOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, r := range replicas {
		emitMarked(t, logs[r], 5, 7)
	}
	waitFor(t, "the later events in each stream", func() bool {
		for _, r := range replicas {
			if last, err := rdb.XRevRangeN(t.Context(), StreamKey(r), "+", "-", 1).Result(); err != nil || len(last) == 0 || last[0].ID != "12-0" {
				return false
			}
		}
		return true
	})

	for name, rd := range map[string]Reader{"redis": {Redis: rdb}, "archive and redis": {ArchiveDir: arch.Dir(), Redis: rdb}} {
		t.Run(name, func(t *testing.T) {
			seqs := map[string][]uint64{}
			if err := rd.QueryContext(t.Context(), Query{Type: TypeAdminChange}, func(e Event) bool {
				seqs[e.Replica] = append(seqs[e.Replica], e.Seq)
				return true
			}); err != nil {
				t.Fatal(err)
			}
			for _, r := range replicas {
				got := seqs[r]
				if len(got) < 7 || len(got) > 12 || !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
					t.Fatalf("replica %s: seqs %v, want its events once each, in order", r, got)
				}
				if name != "redis" && len(got) != 12 {
					t.Fatalf("replica %s over the archive and the streams: %d events %v, want all 12", r, len(got), got)
				}
			}
		})
	}
}
