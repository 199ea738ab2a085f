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

// AuthLimit applies a FailureBudget to the requests of one listener, the proxy's or the admin
// API's: whether a client may fail another authentication now, and when its refusal is due on
// record. A nil AuthLimit limits nothing.
type AuthLimit struct {
	budget FailureBudget
	events *ProbeLimiter // one audit event per client per window, counting the refusals between
}

// NewAuthLimit returns the limit of budget, its refusals audited at most once per client per
// window (DefaultAuthFailureWindow when zero). A nil budget is no limit: nil.
func NewAuthLimit(budget FailureBudget, window time.Duration) *AuthLimit {
	if budget == nil {
		return nil
	}
	if window <= 0 {
		window = DefaultAuthFailureWindow
	}
	return &AuthLimit{budget: budget, events: NewProbeLimiter(window)}
}

// AuthBlock is the refusal, 429 auth_rate_limited, of a client that may not fail another
// authentication now.
type AuthBlock struct {
	// RetryAfter is the wait in whole seconds, at least 1: the Retry-After header.
	RetryAfter string
	// Count is how many refusals this one's audit event counts, itself included; 0 when no
	// event is due (one was written less than a window ago).
	Count int
	// Shared says Count is of every client past ProbeLimiter's bound, not of this one alone.
	Shared bool
}

// Details are the audit details of the refusal of a request with method.
func (b *AuthBlock) Details(method string) map[string]string {
	d := map[string]string{"method": clip(method, 16), "status": strconv.Itoa(http.StatusTooManyRequests),
		"count": strconv.Itoa(b.Count), "retry_after": b.RetryAfter}
	if b.Shared {
		d["counted"] = others
	}
	return d
}

// Blocked returns the block of the client at addr at now, nil when it may go on. It runs
// before any credential of the request is checked. An error (the budget cannot be read)
// must refuse the request: a budget that cannot be read does not lift the limit.
func (l *AuthLimit) Blocked(ctx context.Context, addr netip.Addr, now time.Time) (*AuthBlock, error) {
	if l == nil {
		return nil, nil
	}
	ok, retry, err := l.budget.Peek(ctx, failureKey(addr))
	if err != nil || ok {
		return nil, err
	}
	b := &AuthBlock{RetryAfter: strconv.Itoa(max(1, int((retry+time.Second-1)/time.Second)))}
	b.Count, b.Shared = l.events.Note(addr, now)
	return b, nil
}

// Failed spends one failure of the budget of the client at addr.
func (l *AuthLimit) Failed(ctx context.Context, addr netip.Addr) error {
	if l == nil {
		return nil
	}
	_, _, err := l.budget.Allow(ctx, failureKey(addr))
	return err
}

// authLimit is what a Handler keeps to apply Deps.AuthFailures.
type authLimit struct {
	*AuthLimit
	limited prometheus.Counter
}

func newAuthLimit(budget FailureBudget, window time.Duration, reg prometheus.Registerer) (*authLimit, error) {
	if budget == nil {
		return nil, nil
	}
	l := &authLimit{AuthLimit: NewAuthLimit(budget, window), limited: prometheus.NewCounter(prometheus.CounterOpts{
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
	if h.authLimit == nil {
		return false
	}
	b, err := h.authLimit.Blocked(r.Context(), addr, h.deps.Now())
	if err != nil {
		h.deps.Logger.LogAttrs(r.Context(), slog.LevelError, "auth failure limit unreadable; request refused",
			slog.String("request_id", ev.RequestID), slog.Any("err", err))
		Refuse(w, http.StatusServiceUnavailable, "rate_limit_unavailable")
		return true
	}
	if b == nil {
		return false
	}
	h.authLimit.limited.Inc()
	w.Header().Set("Retry-After", b.RetryAfter)
	if b.Count > 0 {
		ev.Details = b.Details(r.Method)
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
	if err := h.authLimit.Failed(ctx, addr); err != nil {
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
