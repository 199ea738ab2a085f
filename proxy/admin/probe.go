package admin

import (
	"net/http"
	"path"
	"strings"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/proxy"
)

// Calls no route takes (unknown paths, a method a path does not take, paths a ServeMux would
// redirect) are probing: they are answered without reading a credential, and summarised in
// admin.probe events, at most one per client per interval (proxy.ProbeLimiter, shared with
// the proxy's unknown-gateway summaries), so a scan is on record without costing an event
// per request.

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
	if n, shared := s.probes.Note(addr, s.deps.Now()); n > 0 {
		if !s.emit(r.Context(), proxy.ProbeEvent(audit.TypeAdminProbe, r, addr, status, reason, n, shared)) {
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
