package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moltgate/moltgate/internal/testenv"
)

// newClock is a fake clock at a fixed time, so the microseconds Redis holds are real ones.
func newClock() *testenv.Clock { return testenv.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)) }

type limiter interface {
	Allow(ctx context.Context, key string) (bool, time.Duration, error)
}

var (
	_ limiter = (*Memory)(nil)
	_ limiter = (*Redis)(nil)
)

// redisClient starts a redis-server for the test and returns a client of it.
func redisClient(t *testing.T) (*redis.Client, *testenv.RedisServer) {
	t.Helper()
	srv := testenv.Redis(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, DisableIdentity: true, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	return c, srv
}

// implementations makes each limiter for one test, on clock.
var implementations = map[string]func(t *testing.T, l Limit, clock *testenv.Clock) limiter{
	"memory": func(t *testing.T, l Limit, clock *testenv.Clock) limiter {
		m, err := NewMemory(MemoryConfig{Limit: l, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		return m
	},
	"redis": func(t *testing.T, l Limit, clock *testenv.Clock) limiter {
		c, _ := redisClient(t)
		r, err := NewRedis(RedisConfig{Limit: l, Prefix: "test:", Now: clock.Now}, c)
		if err != nil {
			t.Fatal(err)
		}
		return r
	},
}

// The budgets are an hour per event, so a Redis key's real-time expiry (its TAT, hours
// away) never lands during a test.
var hourly = Limit{Rate: 1, Per: time.Hour, Burst: 3}

// allow calls Allow and fails the test on an error.
func allow(t *testing.T, l limiter, key string) (bool, time.Duration) {
	t.Helper()
	ok, retry, err := l.Allow(t.Context(), key)
	if err != nil {
		t.Fatalf("Allow(%q): %v", key, err)
	}
	return ok, retry
}

// spend takes n events from key's budget, each of which must be allowed.
func spend(t *testing.T, l limiter, key string, n int) {
	t.Helper()
	for i := range n {
		if ok, retry := allow(t, l, key); !ok {
			t.Fatalf("event %d of %q: refused (retry after %v), want allowed", i+1, key, retry)
		}
	}
}

// refused checks the next event of key is refused, with retry after want.
func refused(t *testing.T, l limiter, key string, want time.Duration) {
	t.Helper()
	ok, retry := allow(t, l, key)
	if ok || retry != want {
		t.Fatalf("%q: got allowed %v, retry after %v; want refused, retry after %v", key, ok, retry, want)
	}
}

// TestConformance runs every limiter through the same cases: they must answer alike.
func TestConformance(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, l limiter, clock *testenv.Clock)
	}{
		{"a burst, then one per interval", func(t *testing.T, l limiter, clock *testenv.Clock) {
			spend(t, l, "a", 3)
			refused(t, l, "a", time.Hour)
			clock.Advance(59 * time.Minute)
			refused(t, l, "a", time.Minute)
			clock.Advance(time.Minute)
			spend(t, l, "a", 1)
			refused(t, l, "a", time.Hour)
		}},
		{"keys are independent", func(t *testing.T, l limiter, _ *testenv.Clock) {
			spend(t, l, "tenant:a", 3)
			refused(t, l, "tenant:a", time.Hour)
			spend(t, l, "tenant:b", 3)
			refused(t, l, "tenant:b", time.Hour)
		}},
		{"an idle key's whole budget comes back", func(t *testing.T, l limiter, clock *testenv.Clock) {
			spend(t, l, "a", 3)
			clock.Advance(3 * time.Hour)
			spend(t, l, "a", 3)
			refused(t, l, "a", time.Hour)
			clock.Advance(30 * 24 * time.Hour) // no more than whole
			spend(t, l, "a", 3)
			refused(t, l, "a", time.Hour)
		}},
		{"refusals cost nothing", func(t *testing.T, l limiter, clock *testenv.Clock) {
			spend(t, l, "a", 3)
			for range 50 {
				refused(t, l, "a", time.Hour)
			}
			clock.Advance(time.Hour)
			spend(t, l, "a", 1)
		}},
		{"callers at once share one budget", func(t *testing.T, l limiter, _ *testenv.Clock) {
			var allowed atomic.Int64
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					for range 10 {
						ok, _, err := l.Allow(context.Background(), "shared")
						if err != nil {
							t.Error(err)
							return
						}
						if ok {
							allowed.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if got := allowed.Load(); got != 3 {
				t.Fatalf("allowed: got %d, want 3 (the burst) of 80", got)
			}
		}},
	}
	for name, newLimiter := range implementations {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					clock := newClock()
					tt.run(t, newLimiter(t, hourly, clock), clock)
				})
			}
		})
	}
}

func TestLimitDefaultsAndInvalid(t *testing.T) {
	tests := []struct {
		limit         Limit
		interval, tol time.Duration
		err           bool
	}{
		{Limit{Rate: 120}, 500 * time.Millisecond, 500 * time.Millisecond, false},
		{Limit{Rate: 120, Burst: 30}, 500 * time.Millisecond, 15 * time.Second, false},
		{Limit{Rate: 2, Per: time.Second, Burst: 4}, 500 * time.Millisecond, 2 * time.Second, false},
		{Limit{}, 0, 0, true},
		{Limit{Rate: -1}, 0, 0, true},
		{Limit{Rate: 1, Burst: -1}, 0, 0, true},
		{Limit{Rate: 1, Per: -time.Second}, 0, 0, true},
		{Limit{Rate: 1e9, Per: time.Second}, 0, 0, true},
	}
	for _, tt := range tests {
		g, err := tt.limit.gcra()
		switch {
		case tt.err && !errors.Is(err, ErrInvalid):
			t.Errorf("%+v: got %v, want ErrInvalid", tt.limit, err)
		case !tt.err && (err != nil || g.interval != tt.interval || g.tolerance != tt.tol):
			t.Errorf("%+v: got %+v, %v; want interval %v, tolerance %v", tt.limit, g, err, tt.interval, tt.tol)
		}
	}
}

// Memory forgets keys whose budget is whole again, so keys that come and go (callers, tenants)
// do not grow it without bound.
func TestMemoryForgetsIdleKeys(t *testing.T) {
	clock := newClock()
	m, err := NewMemory(MemoryConfig{Limit: hourly, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	const perRound = 3000
	most := 0
	for round := range 10 {
		for i := range perRound {
			if ok, _, err := m.Allow(t.Context(), keyName(round, i)); !ok || err != nil {
				t.Fatalf("round %d key %d: %v %v", round, i, ok, err)
			}
			m.mu.Lock()
			most = max(most, len(m.tat))
			m.mu.Unlock()
		}
		clock.Advance(time.Hour) // every key of the round is whole again
	}
	if most > 2*perRound {
		t.Fatalf("keys held: got at most %d, want at most %d (two rounds' worth) of %d used", most, 2*perRound, 10*perRound)
	}
}

func keyName(round, i int) string { return fmt.Sprintf("user:%d-%d", round, i) }

// Past MaxKeys keys all spending their budgets, Memory fails (the caller refuses: fail closed)
// rather than forget a budget being spent.
func TestMemoryMaxKeys(t *testing.T) {
	clock := newClock()
	m, err := NewMemory(MemoryConfig{Limit: hourly, Now: clock.Now, MaxKeys: 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		spend(t, m, keyName(0, i), 1)
	}
	if ok, _, err := m.Allow(t.Context(), "one-more"); ok || !errors.Is(err, ErrFull) {
		t.Fatalf("the 11th key: got %v, %v; want ErrFull", ok, err)
	}
	spend(t, m, keyName(0, 0), 1) // a key held goes on
	clock.Advance(2 * time.Hour)
	spend(t, m, "one-more", 1) // the others are whole again: forgotten
}

// Issue 15: the limits hold across replicas. Two limiters on one Redis and prefix (two
// replicas) spend one budget; another prefix (another limit) is separate. Each key expires
// when its budget is whole again.
func TestRedisBudgetIsSharedByReplicas(t *testing.T) {
	c, _ := redisClient(t)
	clock := newClock()
	replica := func(prefix string) *Redis {
		r, err := NewRedis(RedisConfig{Limit: hourly, Prefix: prefix, Now: clock.Now}, c)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a, b, other := replica("moltgate:ratelimit:tenant:"), replica("moltgate:ratelimit:tenant:"), replica("moltgate:ratelimit:caller:")
	spend(t, a, "org_a", 2)
	spend(t, b, "org_a", 1)
	refused(t, a, "org_a", time.Hour)
	refused(t, b, "org_a", time.Hour)
	spend(t, other, "org_a", 3)

	ttl, err := c.PTTL(t.Context(), "moltgate:ratelimit:tenant:org_a").Result()
	if err != nil || ttl <= 2*time.Hour || ttl > 3*time.Hour {
		t.Fatalf("key expiry: got %v, %v; want in (2h, 3h], when the budget is whole", ttl, err)
	}
}

// An error reaching Redis is an error, never an allowed event.
func TestRedisUnreachableIsAnError(t *testing.T) {
	c, srv := redisClient(t)
	r, err := NewRedis(RedisConfig{Limit: hourly, Prefix: "test:", Timeout: 2 * time.Second}, c)
	if err != nil {
		t.Fatal(err)
	}
	spend(t, r, "a", 1)
	srv.Kill()
	if ok, _, err := r.Allow(t.Context(), "a"); ok || err == nil {
		t.Fatalf("Redis down: got allowed %v, %v; want an error, not allowed", ok, err)
	}
}

func TestRedisConfigRequired(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	for _, tt := range []struct {
		cfg    RedisConfig
		client redis.Scripter
	}{
		{RedisConfig{Limit: hourly}, c},
		{RedisConfig{Limit: hourly, Prefix: "p:"}, nil},
		{RedisConfig{Limit: Limit{}, Prefix: "p:"}, c},
		{RedisConfig{Limit: hourly, Prefix: "p:", Timeout: -1}, c},
	} {
		if _, err := NewRedis(tt.cfg, tt.client); err == nil {
			t.Errorf("%+v: got no error, want one", tt.cfg)
		}
	}
}
