package main

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy/admin"
)

// serve's limiters have the configured budgets: the burst at once, then refusals. On the
// shared Redis store the budgets are the replicas' together (issue 11): two replicas' limiters
// on one Redis allow the burst between them, not each.
func TestAdminLimitsFromConfig(t *testing.T) {
	cfg, err := loadConfig(writeConfig(t, "admin:\n  rate_limit: {burst: 4, admin_token_burst: 7}\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	for _, backend := range []string{"memory", "redis"} {
		t.Run(backend, func(t *testing.T) {
			replicas := 1
			var shared redis.Scripter
			if backend == "redis" {
				replicas, shared = 2, rdb
			}
			var sets []admin.Limits
			for range replicas {
				limits, err := adminLimits(cfg.Admin.RateLimit, clock, shared)
				if err != nil {
					t.Fatal(err)
				}
				sets = append(sets, limits)
			}
			for _, tt := range []struct {
				name  string
				lim   func(admin.Limits) admin.Limiter
				burst int
			}{
				{"tenant", func(l admin.Limits) admin.Limiter { return l.Tenant }, 4},
				{"caller", func(l admin.Limits) admin.Limiter { return l.Caller }, 4},
				{"admin token", func(l admin.Limits) admin.Limiter { return l.AdminToken }, 7},
			} {
				allowed := 0
				for i := range 20 {
					if ok, _, err := tt.lim(sets[i%len(sets)]).Allow(t.Context(), "k"); err != nil {
						t.Fatal(err)
					} else if ok {
						allowed++
					}
				}
				if allowed != tt.burst {
					t.Errorf("%s: got %d of 20 writes at once allowed, want %d", tt.name, allowed, tt.burst)
				}
			}
		})
	}
}
