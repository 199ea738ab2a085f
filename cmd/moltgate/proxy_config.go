package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moltgate/moltgate/proxy"
	"github.com/moltgate/moltgate/ratelimit"
)

// ProxyConfig configures the proxy listener's own defences.
type ProxyConfig struct {
	// AuthFailures limits failed authentications per client address.
	AuthFailures AuthFailuresConfig `yaml:"auth_failures"`
}

// AuthFailuresConfig is the budget of failed authentications (a bad or expired bearer, an
// unknown gateway token, a bad launch code or session cookie) per client address: past it
// the client is refused, 429 auth_rate_limited, before any credential it sends is checked.
type AuthFailuresConfig struct {
	// Limit is how many failures a client may make at once, and per Window after that.
	// Default 30; -1: no limit.
	Limit int `yaml:"limit"`
	// Window is the period Limit is per; it is also the least time between two audit events
	// of one refused client. Default 5m.
	Window time.Duration `yaml:"window"`
}

func (p *ProxyConfig) setDefaults() {
	a := &p.AuthFailures
	if a.Limit == 0 {
		a.Limit = 30
	}
	if a.Window == 0 {
		a.Window = 5 * time.Minute
	}
}

// validate reports every problem of the proxy section, each naming its key.
func (p *ProxyConfig) validate() []error {
	var errs []error
	a := p.AuthFailures
	if a.Limit < -1 || a.Limit > maxAdminBudget {
		errs = append(errs, fmt.Errorf("proxy.auth_failures.limit: %d: want 1 to %d, or -1 for no limit (0 for the default)", a.Limit, maxAdminBudget))
	}
	if a.Window < time.Second {
		errs = append(errs, fmt.Errorf("proxy.auth_failures.window: %s: want at least 1s (0 for the default)", a.Window))
	}
	return errs
}

// authFailureBudget makes the proxy's budget of failed authentications from the (validated)
// configuration: nil with no limit; in memory on bbolt; on the Redis store (kv not nil), one
// budget in Redis for every replica, whose blocks reach every replica on the change stream.
func authFailureBudget(c AuthFailuresConfig, kv proxy.BlocksKV, rdb redis.Scripter, logger *slog.Logger) (proxy.FailureBudget, *proxy.SharedFailures, error) {
	if c.Limit < 0 {
		return nil, nil, nil
	}
	b, err := newBudget("authn-failures", ratelimit.Limit{Rate: c.Limit, Per: c.Window, Burst: c.Limit}, time.Now, rdb)
	if err != nil || rdb == nil {
		return b, nil, err
	}
	shared := proxy.NewSharedFailures(b, kv, time.Now, logger)
	if err := shared.Reload(); err != nil {
		return nil, nil, fmt.Errorf("proxy.auth_failures: %w", err)
	}
	return shared, shared, nil
}

// budget is a limiter of either kind, held in memory or in Redis.
type budget interface {
	Allow(ctx context.Context, key string) (bool, time.Duration, error)
	Peek(ctx context.Context, key string) (bool, time.Duration, error)
}

// newBudget is a limiter named name: in memory for one process (rdb nil), else kept in the
// shared Redis under moltgate:ratelimit:<name>:, so that it holds across replicas.
func newBudget(name string, limit ratelimit.Limit, now func() time.Time, rdb redis.Scripter) (budget, error) {
	if rdb != nil {
		return ratelimit.NewRedis(ratelimit.RedisConfig{Limit: limit, Prefix: "moltgate:ratelimit:" + name + ":", Now: now}, rdb)
	}
	return ratelimit.NewMemory(ratelimit.MemoryConfig{Limit: limit, Now: now})
}
