package admin

import (
	"net/http"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/proxy"
)

// Calls no route takes (unknown paths, a method a path does not take, paths a ServeMux would
// redirect) are probing: they are answered without reading a credential, and summarised in
// admin.probe events, at most one per client per interval, so a scan is on record without
// costing an event per request.

// defaultProbeInterval is Config.ProbeInterval's default.
const defaultProbeInterval = time.Minute

// maxProbeClients bounds the clients counted at once; past it, new clients share one count.
const maxProbeClients = 4096

// ServeHTTP implements http.Handler. Only a route's own handler answers: the mux's answers
// (404, 405, and the redirects of a path with dot segments or "//") would be unauthenticated
// and unrecorded. The mux has no subtree patterns ("/x/"), so it has no trailing-slash
// redirects either.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := s.mux.Handler(r); pattern == "" || !canonical(r.URL.EscapedPath()) {
		s.unrouted(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// Guard puts the admin API's path check in front of next, the admin listener's mux: a
// request whose path is not canonical, which a ServeMux redirects before any handler sees
// it, is answered and recorded as a probe instead. next should send every path it does not
// serve itself to the admin API (pattern "/"), so that its 404s and 405s are the API's too.
func (s *Server) Guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !canonical(r.URL.EscapedPath()) {
			s.unrouted(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// canonical tells whether p is a path a ServeMux serves as it is: rooted, without dot
// segments or empty segments.
func canonical(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c == p
}

// unrouted answers a call no route takes: 400 bad_path for a path that is not canonical (never
// a redirect), 405 method_not_allowed with Allow for a method its path does not take, else 404
// no_such_endpoint. When the client's summary is due it is recorded first, and the call is
// answered 503 audit_unavailable if it cannot be.
func (s *Server) unrouted(w http.ResponseWriter, r *http.Request) {
	status, reason, allow := http.StatusNotFound, "no_such_endpoint", ""
	if !canonical(r.URL.EscapedPath()) {
		status, reason = http.StatusBadRequest, "bad_path"
	} else if allow = s.allowed(r); allow != "" {
		status, reason = http.StatusMethodNotAllowed, "method_not_allowed"
	}
	addr := proxy.ClientIP(r, s.cfg.TrustedProxies)
	if n, shared := s.probes.note(addr, s.deps.Now()); n > 0 {
		ev := audit.Event{Type: audit.TypeAdminProbe, Actor: audit.Actor{Kind: policies.SubjectAnonymous}, Outcome: "deny",
			Reason: reason, Details: map[string]string{"method": clip(r.Method, 16), "path": clip(r.URL.EscapedPath(), 256),
				"status": strconv.Itoa(status), "count": strconv.Itoa(n)}}
		if addr.IsValid() {
			ev.ClientIP = addr.String()
		}
		if shared {
			ev.Details["counted"] = "others"
		}
		if !s.emit(r.Context(), ev) {
			proxy.Refuse(w, http.StatusServiceUnavailable, "audit_unavailable")
			return
		}
	}
	if allow != "" {
		w.Header().Set("Allow", allow)
	}
	proxy.Refuse(w, status, reason)
}

// allowed lists the methods r's path takes, "" for none.
func (s *Server) allowed(r *http.Request) string {
	var out []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
		probe := r.WithContext(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); pattern != "" {
			out = append(out, m)
		}
	}
	return strings.Join(out, ", ")
}

// probeLimiter counts unrouted calls per client and says when a client's summary is due:
// at its first call, then at its first call at least every after its last summary.
type probeLimiter struct {
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

// note counts one call from addr at now. n is the number of calls the summary due now
// counts (this one included), 0 when none is due; shared says they are the calls of every
// client past maxProbeClients, not of addr alone.
func (l *probeLimiter) note(addr netip.Addr, now time.Time) (n int, shared bool) {
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
				delete(l.clients, k) // its uncounted calls, if any, go unsummarised
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
