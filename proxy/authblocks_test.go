package proxy_test

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy"
	"github.com/moltgate/moltgate/ratelimit"
	"github.com/moltgate/moltgate/store"
)

// TestSharedFailures (issue 11): replicas on one Redis spend one budget of failed
// authentications per client; the replica whose failure spends it blocks the client at once,
// and the block reaches another replica through the store (Changed, as the change stream
// delivers it, or Reload), with no Redis read per request. A block record that does not parse
// is an error naming it and changes nothing. Ended blocks are swept out of the store.
func TestSharedFailures(t *testing.T) {
	srv := testenv.Redis(t)
	kv, err := store.OpenRedis(t.Context(), store.RedisConfig{Addr: srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })
	clock := testenv.NewClock(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC))
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	replica := func() *proxy.SharedFailures {
		b, err := ratelimit.NewRedis(ratelimit.RedisConfig{Limit: ratelimit.Limit{Rate: 3, Per: time.Hour, Burst: 3},
			Prefix: "test:authn:", Now: clock.Now}, kv.Client())
		if err != nil {
			t.Fatal(err)
		}
		return proxy.NewSharedFailures(b, kv, clock.Now, logger)
	}
	peek := func(name string, s *proxy.SharedFailures, key string, wantOK bool, wantRetry time.Duration) {
		t.Helper()
		ok, retry, err := s.Peek(t.Context(), key)
		if err != nil || ok != wantOK || retry != wantRetry {
			t.Fatalf("%s: Peek(%q): got %v, %v, %v; want %v, %v", name, key, ok, retry, err, wantOK, wantRetry)
		}
	}
	a, b := replica(), replica()
	const client = "198.51.100.7"
	for _, s := range []*proxy.SharedFailures{a, a, b} {
		if _, _, err := s.Allow(t.Context(), client); err != nil {
			t.Fatal(err)
		}
	}
	peek("b, whose failure spent the budget", b, client, false, 20*time.Minute)
	peek("a, before the block reaches it", a, client, true, 0)
	peek("b, another client", b, "198.51.100.8", true, 0)
	if err := a.Changed(proxy.BlocksBucket, client); err != nil {
		t.Fatal(err)
	}
	peek("a, once the change reached it", a, client, false, 20*time.Minute)
	c := replica()
	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	peek("a replica that reloaded", c, client, false, 20*time.Minute)

	if err := kv.Put(proxy.BlocksBucket, client, []byte("next tuesday")); err != nil {
		t.Fatal(err)
	}
	if err := a.Changed(proxy.BlocksBucket, client); err == nil || !strings.Contains(err.Error(), proxy.BlocksBucket) {
		t.Errorf("a block record that does not parse: %v, want an error naming %s", err, proxy.BlocksBucket)
	}
	peek("a, after a bad record", a, client, false, 20*time.Minute)

	clock.Advance(20 * time.Minute)
	for name, s := range map[string]*proxy.SharedFailures{"a": a, "b": b, "c": c} {
		peek(name+", the block over", s, client, true, 0)
	}

	// An hour after a replica's last sweep, the next block it writes sweeps the ended (and
	// unreadable) blocks out of the store.
	const ended = "198.51.100.50"
	if err := kv.Put(proxy.BlocksBucket, ended, []byte(clock.Now().Add(-time.Second).Format(time.RFC3339Nano))); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	const next = "198.51.100.9"
	for range 3 {
		if _, _, err := b.Allow(t.Context(), next); err != nil {
			t.Fatal(err)
		}
	}
	for _, key := range []string{ended, client} {
		if _, err := kv.Get(proxy.BlocksBucket, key); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("the block of %s after the sweep: %v, want it gone", key, err)
		}
	}
	if _, err := kv.Get(proxy.BlocksBucket, next); err != nil {
		t.Errorf("the new block after the sweep: %v, want it kept", err)
	}
}
