package proxy

import (
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/policies"
)

// Probing is recorded, but summarised: a request for a gateway that does not exist here (and,
// on the admin listener, a call no route takes) is reconnaissance worth an audit event, yet a
// scanner must not be able to flood the audit trail with one event per request. Each client
// gets an event at its first such request, then at most one per interval, counting the
// requests in between.

// DefaultProbeInterval is the least time between two probe summaries of one client, when a
// configuration leaves it zero.
const DefaultProbeInterval = time.Minute

// maxProbeClients bounds the clients counted at once; past it, new clients share one count.
const maxProbeClients = 4096

// ProbeLimiter counts probing requests per client and says when a client's summary is due:
// at its first request, then at its first request at least an interval after its last
// summary. An IPv6 client is its /64. At most 4096 clients are counted at once; past that,
// new clients share one count until clients quiet for an interval are dropped. It is safe
// for concurrent use.
type ProbeLimiter struct {
	every time.Duration

	mu      sync.Mutex
	clients map[string]*probeCount
}

type probeCount struct {
	since time.Time // of the client's last summary
	calls int       // since then, not yet in a summary
}

// others is the key of the clients counted together once maxProbeClients are counted.
const others = "others"

// NewProbeLimiter returns a limiter with at most one summary per client per every
// (DefaultProbeInterval when zero or negative).
func NewProbeLimiter(every time.Duration) *ProbeLimiter {
	if every <= 0 {
		every = DefaultProbeInterval
	}
	return &ProbeLimiter{every: every, clients: map[string]*probeCount{}}
}

// Note counts one request from addr at now. n is the number of requests the summary due now
// counts (this one included), 0 when none is due; shared says they are the requests of every
// client past the bound, not of addr alone.
func (l *ProbeLimiter) Note(addr netip.Addr, now time.Time) (n int, shared bool) {
	// An IPv6 client is its /64: one host holds as many addresses.
	key := addr.String()
	if addr.Is6() && !addr.Is4In6() {
		key = netip.PrefixFrom(addr, 64).Masked().String()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.clients[key]
	if !ok && len(l.clients) >= maxProbeClients {
		for k, old := range l.clients {
			if now.Sub(old.since) >= l.every {
				delete(l.clients, k) // its uncounted requests, if any, go unsummarised
			}
		}
		if len(l.clients) >= maxProbeClients {
			key, shared = others, true
			c, ok = l.clients[key]
		}
	}
	switch {
	case !ok:
		l.clients[key] = &probeCount{since: now}
		return 1, shared
	case now.Sub(c.since) >= l.every:
		n = c.calls + 1
		c.since, c.calls = now, 0
		return n, shared
	default:
		c.calls++
		return 0, shared
	}
}

// ProbeEvent is the summary event of n probing requests (typ audit.TypeAdminProbe or
// audit.TypeProxyProbe) from addr, r being the one that made it due: anonymous, refused
// with status and reason, details method, path, status and count (and counted "others" when
// shared). Values the client chose are clipped.
func ProbeEvent(typ string, r *http.Request, addr netip.Addr, status int, reason string, n int, shared bool) audit.Event {
	ev := audit.Event{Type: typ, Actor: audit.Actor{Kind: policies.SubjectAnonymous}, Outcome: audit.OutcomeDeny,
		Reason: reason, Details: map[string]string{"method": clip(r.Method, 16), "path": clip(r.URL.EscapedPath(), 256),
			"status": strconv.Itoa(status), "count": strconv.Itoa(n)}}
	if addr.IsValid() {
		ev.ClientIP = addr.String()
	}
	if shared {
		ev.Details["counted"] = others
	}
	return ev
}

// unknownGateway refuses a request for a gateway that does not exist here, 404
// unknown_gateway, after recording the client's proxy.probe summary when one is due; a
// summary that cannot be recorded is answered 503 audit_unavailable instead.
func (h *Handler) unknownGateway(w http.ResponseWriter, r *http.Request, requestID string) {
	addr := ClientIP(r, h.cfg.TrustedProxies)
	if n, shared := h.probes.Note(addr, h.deps.Now()); n > 0 {
		ev := ProbeEvent(audit.TypeProxyProbe, r, addr, http.StatusNotFound, "unknown_gateway", n, shared)
		ev.RequestID, ev.Details["host"] = requestID, clip(r.Host, 256)
		if err := h.deps.Audit.Emit(r.Context(), ev); err != nil {
			h.deps.Logger.LogAttrs(r.Context(), slog.LevelError, "audit emit failed",
				slog.String("request_id", requestID), slog.Any("err", err))
			Refuse(w, http.StatusServiceUnavailable, "audit_unavailable")
			return
		}
	}
	Refuse(w, http.StatusNotFound, "unknown_gateway")
}

// clip cuts s to at most n bytes.
func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
