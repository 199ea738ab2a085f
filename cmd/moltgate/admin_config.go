package main

import (
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/ratelimit"
)

// AdminConfig configures the admin API.
type AdminConfig struct {
	// RateLimit bounds admin writes (every method but GET and HEAD).
	RateLimit AdminRateLimitConfig `yaml:"rate_limit"`
}

// AdminRateLimitConfig are the budgets of admin writes, generous for a person or a dashboard,
// far below a script in a loop. Beyond one, a write is refused with 429 and Retry-After.
type AdminRateLimitConfig struct {
	// TenantWritesPerMinute is each tenant's budget, all of its users' writes together.
	// Default 120.
	TenantWritesPerMinute int `yaml:"tenant_writes_per_minute"`
	// CallerWritesPerMinute is each signed-in user's budget, across tenants. Default 120.
	CallerWritesPerMinute int `yaml:"caller_writes_per_minute"`
	// Burst is how many writes a tenant or a user may make at once, before the per-minute
	// rate applies. Default 30.
	Burst int `yaml:"burst"`
	// AdminTokenWritesPerMinute is the admin token's budget (its writes do not spend a
	// tenant's). Default 1200.
	AdminTokenWritesPerMinute int `yaml:"admin_token_writes_per_minute"`
	// AdminTokenBurst is how many writes the admin token may make at once. Default 300.
	AdminTokenBurst int `yaml:"admin_token_burst"`
}

func (a *AdminConfig) setDefaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	rl := &a.RateLimit
	def(&rl.TenantWritesPerMinute, 120)
	def(&rl.CallerWritesPerMinute, 120)
	def(&rl.Burst, 30)
	def(&rl.AdminTokenWritesPerMinute, 1200)
	def(&rl.AdminTokenBurst, 300)
}

// maxAdminBudget bounds each rate-limit setting: beyond it a limit no longer limits.
const maxAdminBudget = 1_000_000

// validate reports every problem of the admin section, each naming its key.
func (a *AdminConfig) validate() []error {
	var errs []error
	rl := a.RateLimit
	for key, v := range map[string]int{
		"tenant_writes_per_minute":      rl.TenantWritesPerMinute,
		"caller_writes_per_minute":      rl.CallerWritesPerMinute,
		"burst":                         rl.Burst,
		"admin_token_writes_per_minute": rl.AdminTokenWritesPerMinute,
		"admin_token_burst":             rl.AdminTokenBurst,
	} {
		if v < 1 || v > maxAdminBudget {
			errs = append(errs, fmt.Errorf("admin.rate_limit.%s: %d: want 1 to %d (0 for the default)", key, v, maxAdminBudget))
		}
	}
	return errs
}

// adminLimits makes the admin API's limiters from the (validated) configuration: held in
// memory for one process on bbolt, or kept in the shared Redis (rdb not nil), so that the
// budgets hold across every replica rather than per replica.
func adminLimits(c AdminRateLimitConfig, now func() time.Time, rdb redis.Scripter) (admin.Limits, error) {
	limiter := func(name string, perMinute, burst int) (admin.Limiter, error) {
		return newBudget("admin-"+name, ratelimit.Limit{Rate: perMinute, Per: time.Minute, Burst: burst}, now, rdb)
	}
	tenant, err := limiter("tenant", c.TenantWritesPerMinute, c.Burst)
	if err != nil {
		return admin.Limits{}, err
	}
	caller, err := limiter("caller", c.CallerWritesPerMinute, c.Burst)
	if err != nil {
		return admin.Limits{}, err
	}
	token, err := limiter("token", c.AdminTokenWritesPerMinute, c.AdminTokenBurst)
	if err != nil {
		return admin.Limits{}, err
	}
	return admin.Limits{Tenant: tenant, Caller: caller, AdminToken: token}, nil
}
