package main

import (
	"testing"
	"time"

	"github.com/moltgate/moltgate/proxy/admin"
)

// serve's limiters have the configured budgets: the burst at once, then refusals.
func TestAdminLimitsFromConfig(t *testing.T) {
	cfg, err := loadConfig(writeConfig(t, "admin:\n  rate_limit: {burst: 4, admin_token_burst: 7}\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	limits, err := adminLimits(cfg.Admin.RateLimit, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		lim   admin.Limiter
		burst int
	}{
		{"tenant", limits.Tenant, 4},
		{"caller", limits.Caller, 4},
		{"admin token", limits.AdminToken, 7},
	} {
		allowed := 0
		for range 20 {
			if ok, _, err := tt.lim.Allow(t.Context(), "k"); err != nil {
				t.Fatal(err)
			} else if ok {
				allowed++
			}
		}
		if allowed != tt.burst {
			t.Errorf("%s: got %d of 20 writes at once allowed, want %d", tt.name, allowed, tt.burst)
		}
	}
}
