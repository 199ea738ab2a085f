package admin

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/proxy"
)

// Limiter takes one write from key's budget: ok, or refused with the wait until it would be
// allowed. ratelimit.Memory and ratelimit.Redis implement it. An error refuses the write.
type Limiter interface {
	Allow(ctx context.Context, key string) (ok bool, retryAfter time.Duration, err error)
}

// Limits are the budgets of admin writes (every method but GET and HEAD), spent after the
// caller is authenticated and before the write is recorded (admin.request) or made: a flood is
// refused before it can write thousands of audit events. A nil Limiter leaves its limit off.
type Limits struct {
	// Tenant is each tenant's budget: the writes about the tenant (its keys, its gateways) by
	// all its users together, so that one tenant's storm does not starve the others. Only
	// writes the policy allowed spend it, so no one can spend another tenant's budget; the
	// admin token's do not (operators must get through a tenant's storm).
	Tenant Limiter
	// Caller is each signed-in user's budget, across every tenant (key "user:<id>").
	Caller Limiter
	// AdminToken is the admin token's budget (key "admin-token").
	AdminToken Limiter
}

// rateLimits is what the Server keeps to apply Limits.
type rateLimits struct {
	Limits
	refused *prometheus.CounterVec // limit: tenant, caller, auth_failures
	runs    refusalRuns
}

func newRateLimits(l Limits, reg prometheus.Registerer) (*rateLimits, error) {
	rl := &rateLimits{Limits: l, runs: refusalRuns{keys: map[string]string{}},
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moltgate_admin_rate_limited_total",
			Help: "Admin API calls refused with 429: writes by a rate limit (a tenant's budget or a caller's, a user's or the admin token's), any call by its client address's budget of failed authentications (auth_failures).",
		}, []string{"limit"})}
	if reg == nil {
		reg = prometheus.NewRegistry() // not exported
	}
	if err := reg.Register(rl.refused); err != nil {
		return nil, err
	}
	rl.refused.WithLabelValues("tenant")
	rl.refused.WithLabelValues("caller")
	rl.refused.WithLabelValues("auth_failures")
	return rl, nil
}

func isWrite(r *http.Request) bool { return r.Method != http.MethodGet && r.Method != http.MethodHead }

// limitCaller spends one write of the caller's budget: the admin token's, or the signed-in
// user's. It answers the refusal itself, and returns false, when the write may not go on.
func (s *Server) limitCaller(w http.ResponseWriter, r *http.Request, c *call) bool {
	if !isWrite(r) {
		return true
	}
	lim, key := s.limits.Caller, "user:"+c.subject.ID
	if c.subject.Kind == policies.SubjectAdminToken {
		lim, key = s.limits.AdminToken, "admin-token"
	}
	return s.spend(w, r, c, "caller", lim, key)
}

// limitTenant spends one write of the budget of the tenant the call is about. Writes that
// name no tenant (a gateway create, a master key rotation) and the admin token's do not.
func (s *Server) limitTenant(w http.ResponseWriter, r *http.Request, c *call) bool {
	if !isWrite(r) || c.ev.Tenant == "" || c.subject.Kind == policies.SubjectAdminToken {
		return true
	}
	return s.spend(w, r, c, "tenant", s.limits.Tenant, c.ev.Tenant)
}

// spend takes one write from key's budget in lim, named limit ("tenant" or "caller"). It
// answers the refusal itself, and returns false, when the write may not go on.
func (s *Server) spend(w http.ResponseWriter, r *http.Request, c *call, limit string, lim Limiter, key string) bool {
	if lim == nil {
		return true
	}
	ok, retry, err := lim.Allow(r.Context(), key)
	run := limit + ":" + key
	status, reason := http.StatusTooManyRequests, "rate_limited"
	switch {
	case err != nil:
		// Fail closed: a limiter that cannot answer (Redis down) must not lift the limits.
		status, reason = http.StatusServiceUnavailable, "rate_limit_unavailable"
	case ok:
		s.limits.runs.end(run)
		return true
	default:
		s.limits.refused.WithLabelValues(limit).Inc()
		secs := strconv.Itoa(retrySeconds(retry))
		w.Header().Set("Retry-After", secs)
		c.ev.Details["retry_after"] = secs
	}
	if !s.limits.runs.start(run, reason) {
		// The run of refusals of this key is on record already (and counted, for 429s):
		// a flood of refusals writes one event, and one log line.
		proxy.Refuse(w, status, reason)
		return false
	}
	if err != nil {
		s.deps.Logger.LogAttrs(r.Context(), slog.LevelError, "admin: rate limiter failed; writes refused",
			slog.String("limit", limit), slog.Any("err", err))
	}
	c.ev.Details["limit"] = limit
	s.refuse(w, r, c, audit.TypeAdminDeny, status, reason)
	return false
}

// retrySeconds is Retry-After for a wait: whole seconds, rounded up, at least 1.
func retrySeconds(d time.Duration) int {
	return max(1, int((d+time.Second-1)/time.Second))
}

// refusalRuns keeps which keys are being refused, and why, so a flood of refused writes by
// one caller or about one tenant is audited once: the first refusal of each run (a run ends
// when the key is allowed a write again, or is refused for another reason). Flooding at the
// limit thus writes at most one refusal event per write allowed. Its memory is bounded: past
// maxRuns keys it forgets them all, which costs at most one more event each.
type refusalRuns struct {
	mu   sync.Mutex
	keys map[string]string // key → reason
}

const maxRuns = 10_000

// start records a refusal of key for reason and reports whether it begins a run.
func (f *refusalRuns) start(key, reason string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.keys[key] == reason {
		return false
	}
	if len(f.keys) >= maxRuns {
		clear(f.keys)
	}
	f.keys[key] = reason
	return true
}

// end ends key's run, if it has one.
func (f *refusalRuns) end(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.keys, key)
}
