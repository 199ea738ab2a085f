package proxy

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/policies"
)

// Failed authentications are limited per client address, so that guessing credentials
// (bearer tokens, gateway tokens, launch codes, session cookies) costs the guesser its
// access: past its budget a client is refused, 429 auth_rate_limited with Retry-After, before
// any credential it sends is checked, a valid one included, until its budget affords a
// failure again. The client is the address ClientIP resolves (forwarding headers only from
// trusted proxies, so a client can neither evade the limit nor spend another's budget); an
// IPv6 client is its /64.

// FailureBudget is the budget of failed authentications per client: ratelimit.Memory for one
// replica, ratelimit.Redis for replicas that share one budget. Peek says whether one more
// failure could be afforded, without spending; Allow spends one. An error from Peek refuses
// the request (fail closed: a budget that cannot be read does not lift the limit).
type FailureBudget interface {
	Peek(ctx context.Context, key string) (ok bool, retryAfter time.Duration, err error)
	Allow(ctx context.Context, key string) (ok bool, retryAfter time.Duration, err error)
}

// DefaultAuthFailureWindow is the least time between two audit events of one client refused
// for its failures, when Config.AuthFailureWindow is zero.
const DefaultAuthFailureWindow = time.Minute

// authLimit is what a Handler keeps to apply Deps.AuthFailures.
type authLimit struct {
	budget  FailureBudget
	events  *ProbeLimiter // one audit event per client per window, counting the refusals between
	limited prometheus.Counter
}

func newAuthLimit(budget FailureBudget, window time.Duration, reg prometheus.Registerer) (*authLimit, error) {
	if budget == nil {
		return nil, nil
	}
	if window <= 0 {
		window = DefaultAuthFailureWindow
	}
	l := &authLimit{budget: budget, events: NewProbeLimiter(window), limited: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "moltgate_authn_rate_limited_total",
		Help: "Requests refused with 429 auth_rate_limited: their client address had spent its budget of failed authentications.",
	})}
	if err := reg.Register(l.limited); err != nil {
		return nil, err
	}
	return l, nil
}

// failureKey is the budget key of a client: its address, an IPv6 client's /64 (one host
// holds as many addresses).
func failureKey(addr netip.Addr) string {
	switch {
	case !addr.IsValid():
		return "unknown"
	case addr.Is6() && !addr.Is4In6():
		return netip.PrefixFrom(addr, 64).Masked().String()
	}
	return addr.String()
}

// authBlocked refuses r, and returns true, when its client may not fail another
// authentication now: 429 with Retry-After, audited once per client per window with the
// refusals counted. It runs before any credential of r is checked.
func (h *Handler) authBlocked(w http.ResponseWriter, r *http.Request, ev audit.Event, addr netip.Addr) bool {
	l := h.authLimit
	if l == nil {
		return false
	}
	ok, retry, err := l.budget.Peek(r.Context(), failureKey(addr))
	if err != nil {
		h.deps.Logger.LogAttrs(r.Context(), slog.LevelError, "auth failure limit unreadable; request refused",
			slog.String("request_id", ev.RequestID), slog.Any("err", err))
		Refuse(w, http.StatusServiceUnavailable, "rate_limit_unavailable")
		return true
	}
	if ok {
		return false
	}
	l.limited.Inc()
	secs := strconv.Itoa(max(1, int((retry+time.Second-1)/time.Second)))
	w.Header().Set("Retry-After", secs)
	if n, shared := l.events.Note(addr, h.deps.Now()); n > 0 {
		ev.Details = map[string]string{"method": clip(r.Method, 16), "status": strconv.Itoa(http.StatusTooManyRequests),
			"count": strconv.Itoa(n), "retry_after": secs}
		if shared {
			ev.Details["counted"] = others
		}
		ev.Actor = audit.Actor{Kind: policies.SubjectAnonymous}
		h.refuseAudited(w, r, ev, audit.TypeAuthnFailure, http.StatusTooManyRequests, "auth_rate_limited")
		return true
	}
	Refuse(w, http.StatusTooManyRequests, "auth_rate_limited")
	return true
}

// authFailed spends one failure of the budget of the client at addr. A budget that cannot be
// written is logged; the failure is refused either way.
func (h *Handler) authFailed(ctx context.Context, addr netip.Addr) {
	if h.authLimit == nil {
		return
	}
	if _, _, err := h.authLimit.budget.Allow(ctx, failureKey(addr)); err != nil {
		h.deps.Logger.LogAttrs(ctx, slog.LevelError, "auth failure not counted", slog.Any("err", err))
	}
}

// identifyCounted is identifyToken for a socket's first frame from the client at addr: a
// credential it refuses spends one failure of the client's budget.
func (h *Handler) identifyCounted(addr netip.Addr) func(context.Context, string) (policies.Subject, time.Time, int, string) {
	return func(ctx context.Context, tok string) (policies.Subject, time.Time, int, string) {
		s, exp, status, reason := h.identifyToken(ctx, tok)
		if status == http.StatusUnauthorized {
			h.authFailed(ctx, addr)
		}
		return s, exp, status, reason
	}
}
