package admin

import (
	"log/slog"
	"net/http"
	"net/netip"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/proxy"
)

// Failed authentications on the admin API (a guessed admin token, a bad session) spend the
// client address's budget of failures (Deps.AuthFailures), as on the proxy: past it the
// client is refused 429 auth_rate_limited with Retry-After before its credential is read, a
// valid one included, so that guessing the admin token costs the guesser its access. On
// Redis the budget, and its blocks, are the replicas' (proxy.SharedFailures).

// authBlocked refuses c, and returns true, when the client at addr may not fail another
// authentication now: 429 with Retry-After, audited once per client per window with the
// refusals counted.
func (s *Server) authBlocked(w http.ResponseWriter, r *http.Request, c *call, addr netip.Addr) bool {
	b, err := s.authLimit.Blocked(r.Context(), addr, s.deps.Now())
	if err != nil {
		// Fail closed: a budget that cannot be read does not lift the limit.
		s.deps.Logger.LogAttrs(r.Context(), slog.LevelError, "admin: auth failure limit unreadable; call refused", slog.Any("err", err))
		proxy.Refuse(w, http.StatusServiceUnavailable, "rate_limit_unavailable")
		return true
	}
	if b == nil {
		return false
	}
	s.limits.refused.WithLabelValues("auth_failures").Inc()
	w.Header().Set("Retry-After", b.RetryAfter)
	if b.Count == 0 {
		proxy.Refuse(w, http.StatusTooManyRequests, "auth_rate_limited")
		return true
	}
	for k, v := range b.Details(r.Method) {
		c.ev.Details[k] = v
	}
	s.refuse(w, r, c, audit.TypeAuthnFailure, http.StatusTooManyRequests, "auth_rate_limited")
	return true
}

// authFailed spends one failure of the budget of the client at addr. A budget that cannot be
// written is logged; the call is refused either way.
func (s *Server) authFailed(r *http.Request, addr netip.Addr) {
	if err := s.authLimit.Failed(r.Context(), addr); err != nil {
		s.deps.Logger.LogAttrs(r.Context(), slog.LevelError, "admin: auth failure not counted", slog.Any("err", err))
	}
}
