package store

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moltgate/moltgate/internal/testenv"
)

// view is what a replica keeps: the changes applied, and the full reloads.
type view struct {
	mu      sync.Mutex
	changes []Change
	reloads int
}

func (v *view) apply(_ context.Context, c Change) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.changes = append(v.changes, c)
	return nil
}

func (v *view) reload(context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.reloads++
	return nil
}

func (v *view) snapshot() ([]Change, int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]Change(nil), v.changes...), v.reloads
}

func openTestRedis(t *testing.T, addr string) *Redis {
	t.Helper()
	r, err := OpenRedis(t.Context(), RedisConfig{Addr: addr, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// follow starts a follower of r feeding v, stopped when the test ends.
func follow(t *testing.T, r *Redis, v *view, maxStale time.Duration) *Follower {
	t.Helper()
	f, err := r.Follow(t.Context(), FollowConfig{MaxStaleness: maxStale, Apply: v.apply, Reload: v.reload,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

// TestRedisChangeStream: every write that changes something, on any handle, reaches every
// follower as one change, numbered without gaps; a write that changes nothing is no change
// (issue 11).
func TestRedisChangeStream(t *testing.T) {
	srv := testenv.Redis(t)
	a, b := openTestRedis(t, srv.Addr), openTestRedis(t, srv.Addr)
	if err := a.Put("before", "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	var v view
	f := follow(t, b, &v, time.Second)

	steps := []struct {
		write func() error
		want  *Change
	}{
		{func() error { return a.Put("gateways", "g1", []byte("1")) }, &Change{Bucket: "gateways", Key: "g1"}},
		{func() error { return a.Swap("gateways", "g1", []byte("1"), []byte("2")) }, &Change{Bucket: "gateways", Key: "g1"}},
		{func() error {
			if err := a.Swap("gateways", "g1", []byte("1"), []byte("3")); !errors.Is(err, ErrConflict) {
				return err
			}
			return nil
		}, nil},
		{func() error { return a.Delete("gateways", "missing") }, nil},
		{func() error { return b.Swap("keys", "t/k", nil, []byte("x")) }, &Change{Bucket: "keys", Key: "t/k"}},
		{func() error { return a.Delete("gateways", "g1") }, &Change{Bucket: "gateways", Key: "g1"}},
	}
	var want []Change
	for i, s := range steps {
		if err := s.write(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if s.want != nil {
			c := *s.want
			c.Seq = uint64(len(want) + 2) // the Put before the follower started is 1
			want = append(want, c)
		}
	}
	testenv.WaitUntil(t, "every change applied", 5*time.Second, func() bool {
		got, _ := v.snapshot()
		return len(got) >= len(want)
	})
	got, reloads := v.snapshot()
	if len(got) != len(want) {
		t.Fatalf("changes: got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("change %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if reloads != 0 {
		t.Errorf("reloads: got %d, want 0", reloads)
	}
	if err := f.Fresh(); err != nil {
		t.Errorf("fresh: %v", err)
	}
}

// TestFollowerReloadsAtGap: a stream trimmed past a replica's position makes it reload in
// full, then follow again (issue 11).
func TestFollowerReloadsAtGap(t *testing.T) {
	srv := testenv.Redis(t)
	r := openTestRedis(t, srv.Addr)
	var v view
	follow(t, r, &v, time.Second)
	raw := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { raw.Close() })
	// Writes the follower has not read yet, then the stream trimmed to nothing: hold the
	// follower off by writing and trimming in one transaction.
	if _, err := raw.TxPipelined(t.Context(), func(p redis.Pipeliner) error {
		p.Incr(t.Context(), "moltgate:changes:seq")
		p.Incr(t.Context(), "moltgate:changes:seq")
		p.XTrimMaxLen(t.Context(), "moltgate:changes", 0)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := r.Put("b", "after", []byte("v")); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, "a full reload", 5*time.Second, func() bool { _, n := v.snapshot(); return n == 1 })
	if err := r.Put("b", "next", []byte("v")); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, "the change after the reload", 5*time.Second, func() bool {
		got, _ := v.snapshot()
		return len(got) > 0 && got[len(got)-1] == Change{Seq: 4, Bucket: "b", Key: "next"}
	})
}

// TestFollowerFailsClosed: with the server gone the view goes stale within MaxStaleness and
// Fresh says so; when the server is back the view is fresh again with no restart. A server
// back without its writes makes the follower reload in full; one back with them does not
// (issue 11).
func TestFollowerFailsClosed(t *testing.T) {
	for _, durable := range []bool{true, false} {
		name := map[bool]string{true: "durable", false: "empty"}[durable]
		t.Run(name, func(t *testing.T) {
			start := map[bool]func(testing.TB) *testenv.RedisServer{true: testenv.RedisDurable, false: testenv.Redis}[durable]
			srv := start(t)
			r := openTestRedis(t, srv.Addr)
			var v view
			const maxStale = 600 * time.Millisecond
			f := follow(t, r, &v, maxStale)
			if err := r.Put("b", "k", []byte("v")); err != nil {
				t.Fatal(err)
			}
			testenv.WaitUntil(t, "the change applied", 5*time.Second, func() bool { got, _ := v.snapshot(); return len(got) == 1 })

			srv.Kill()
			testenv.WaitUntil(t, "the view stale", 5*time.Second, func() bool { return errors.Is(f.Fresh(), ErrStale) })
			srv.Restart()
			testenv.WaitUntil(t, "the view fresh again", 10*time.Second, func() bool { return f.Fresh() == nil })

			_, reloads := v.snapshot()
			if want := map[bool]int{true: 0, false: 1}[durable]; reloads != want {
				t.Errorf("reloads: got %d, want %d", reloads, want)
			}
			_, err := r.Get("b", "k")
			if durable && err != nil {
				t.Errorf("acknowledged write after restart: %v", err)
			}
			if !durable && !errors.Is(err, ErrNotFound) {
				t.Errorf("write on an empty server after restart: got %v, want ErrNotFound", err)
			}
		})
	}
}
