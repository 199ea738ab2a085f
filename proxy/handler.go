package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/proxy/authn"
	"github.com/moltgate/moltgate/proxy/browser"
	"github.com/moltgate/moltgate/proxy/wsrelay"
	"github.com/moltgate/moltgate/registry"
)

// Decider is the policy engine.
type Decider interface {
	Decide(ctx context.Context, in *policies.Input) (policies.Decision, error)
	Revision() string
}

// Verifier verifies Clerk session tokens.
type Verifier interface {
	Verify(ctx context.Context, token string) (authn.Identity, error)
}

// Auditor records security events.
type Auditor interface {
	Emit(ctx context.Context, e audit.Event) error
}

// Gateways is the registry as the request path sees it.
type Gateways interface {
	Lookup(id string) (*registry.Entry, bool)
	ByToken(tok string) (*registry.Entry, bool)
	ByAPIToken(tok string) (*registry.Entry, string, registry.APIToken, bool)
}

// Config configures a Handler. The zero value of each field is its documented default.
type Config struct {
	// GatewayDomain: a request for <id>.<GatewayDomain> goes to gateway id. Default "gw.localhost".
	GatewayDomain string
	// TrustedProxies are the peers whose CF-Connecting-IP and X-Forwarded-For are believed.
	// Default none: the socket peer is the client.
	TrustedProxies []netip.Prefix
	// MaxToolBodyBytes bounds the POST /tools/invoke body read to find the tool. Default 1 MiB.
	MaxToolBodyBytes int64
	// Transport carries requests to gateways. Default NewTransport(TransportConfig{}).
	Transport http.RoundTripper
	// SignInURL is where a page navigation without identity is sent, with the gateway id and
	// the path to return to (see browser.SignInURL). Nil: such navigations get 401.
	SignInURL *url.URL
	// ProbeInterval is the least time between two proxy.probe events for one client
	// (requests for gateways that do not exist). Default DefaultProbeInterval, one minute.
	ProbeInterval time.Duration
	// AuthFailureWindow is the least time between two audit events of one client refused for
	// its failed authentications (authlimit.go). Default DefaultAuthFailureWindow, one minute.
	AuthFailureWindow time.Duration
}

// Deps are the parts a Handler works with.
type Deps struct {
	Gateways Gateways
	Policy   Decider
	// Sessions verifies Clerk session JWTs; nil refuses every JWT (gateway tokens still work).
	Sessions Verifier
	Audit    Auditor
	Logger   *slog.Logger
	Metrics  prometheus.Registerer
	// Relay serves allowed WebSocket upgrades; nil refuses every upgrade.
	Relay *wsrelay.Relay
	// Browser keeps browsers' sessions (the session cookie, launch links); nil: none.
	Browser *browser.Sessions
	// AuthFailures is the budget of failed authentications per client address (authlimit.go);
	// nil: no limit.
	AuthFailures FailureBudget
	// Now is the clock of the probe summaries and of API tokens' expiry. Default time.Now.
	Now func() time.Time
}

// Handler is the proxy's http.Handler.
type Handler struct {
	cfg  Config
	deps Deps
	m    *metrics
	rp   *httputil.ReverseProxy
	// probes summarises requests for unknown gateways per client (probe.go).
	probes *ProbeLimiter
	// authLimit limits failed authentications per client (authlimit.go); nil: no limit.
	authLimit *authLimit

	reqPrefix string
	reqSeq    atomic.Uint64
}

var _ http.Handler = (*Handler)(nil)

// New returns a Handler.
func New(cfg Config, deps Deps) (*Handler, error) {
	if deps.Gateways == nil || deps.Policy == nil || deps.Audit == nil || deps.Logger == nil || deps.Metrics == nil {
		return nil, errors.New("proxy: Gateways, Policy, Audit, Logger and Metrics are required")
	}
	if cfg.GatewayDomain == "" {
		cfg.GatewayDomain = "gw.localhost"
	}
	cfg.GatewayDomain = strings.ToLower(strings.TrimSuffix(cfg.GatewayDomain, "."))
	if cfg.MaxToolBodyBytes <= 0 {
		cfg.MaxToolBodyBytes = 1 << 20
	}
	if cfg.Transport == nil {
		cfg.Transport = NewTransport(TransportConfig{})
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	m, err := newMetrics(deps.Metrics)
	if err != nil {
		return nil, fmt.Errorf("proxy: metrics: %w", err)
	}
	var prefix [4]byte
	_, _ = rand.Read(prefix[:])
	h := &Handler{cfg: cfg, deps: deps, m: m, probes: NewProbeLimiter(cfg.ProbeInterval), reqPrefix: hex.EncodeToString(prefix[:]) + "-"}
	if h.authLimit, err = newAuthLimit(deps.AuthFailures, cfg.AuthFailureWindow, deps.Metrics); err != nil {
		return nil, fmt.Errorf("proxy: metrics: %w", err)
	}
	h.rp = &httputil.ReverseProxy{
		Rewrite:   h.rewrite,
		Transport: cfg.Transport,
		// Zero: a stream (a body of unknown length, as chat and agent output are, or
		// text/event-stream) is flushed at every write by ReverseProxy itself; a body of known
		// length is written as a plain proxy writes it, without a flush timer per response
		// and a second write for its headers (TestStreamedResponsesFlowAtOnce).
		FlushInterval:  0,
		BufferPool:     newBufferPool(),
		ErrorHandler:   h.upstreamError,
		ModifyResponse: filterSetCookies,
		ErrorLog:       slog.NewLogLogger(deps.Logger.Handler(), slog.LevelWarn),
	}
	return h, nil
}

// request is what one request carries from the decision to the rewrite.
type request struct {
	entry   *registry.Entry
	path    string
	subject policies.Subject
	scopes  []string
	id      string
	https   bool
	client  string // client address, for X-Forwarded-For in trusted-proxy mode
}

type requestKey struct{}

// ServeHTTP routes, identifies, decides and forwards or refuses one request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	route, decision := "gateway", "allow"
	defer func() {
		h.m.requests.WithLabelValues(route, decision, statusClass(sw.status())).Inc()
		h.m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
	}()
	rq := &request{id: h.newRequestID()}
	sw.Header().Set("X-Request-Id", rq.id)

	entry, ok := h.deps.Gateways.Lookup(gatewayID(r.Host, h.cfg.GatewayDomain))
	if !ok {
		route, decision = "unknown", "deny"
		h.unknownGateway(sw, r, rq.id)
		return
	}
	rq.entry = entry
	ip := ClientIP(r, h.cfg.TrustedProxies)
	// Anonymous until identified: a refusal before that (bad_path) still names an actor kind.
	ev := audit.Event{Tenant: entry.Tenant, Gateway: entry.ID, RequestID: rq.id, ClientIP: addrString(ip),
		Actor: audit.Actor{Kind: policies.SubjectAnonymous}}
	if h.authBlocked(sw, r, ev, ip) {
		decision = "deny"
		return
	}

	p, err := normalizePath(r.URL)
	if err != nil {
		decision = "deny"
		h.refuseAudited(sw, r, ev, audit.TypePolicyDeny, http.StatusBadRequest, "bad_path")
		return
	}
	rq.path = p

	https := r.TLS != nil || (contains(h.cfg.TrustedProxies, peerAddr(r)) && r.Header.Get("X-Forwarded-Proto") == "https")
	if strings.HasPrefix(p, browser.PathPrefix) {
		decision = h.serveBrowser(sw, r, entry, ev, p, https)
		return
	}

	id := h.identify(r, entry.ID, https)
	subject := id.subject
	ev.Actor = audit.Actor{Kind: subject.Kind, ID: subject.ID}
	if id.status != 0 {
		decision = "unauthenticated"
		h.m.authnFailed.WithLabelValues(id.reason).Inc()
		if id.status == http.StatusUnauthorized {
			h.authFailed(r.Context(), ip)
		}
		h.refuse(sw, r, ev, audit.TypeAuthnFailure, id.status, id.reason, id, https)
		return
	}
	// A browser attaches its cookies to a request another site makes it send: a change
	// authenticated by a cookie must show it comes from this host's own pages (CSRF).
	if id.via != viaHeader && subject.Kind != policies.SubjectAnonymous && unsafeMethod(r.Method) && !browser.SameOrigin(r, https) {
		decision = "deny"
		h.refuseAudited(sw, r, ev, audit.TypePolicyDeny, http.StatusForbidden, "csrf")
		return
	}
	rq.subject = subject

	upRoute := gatewayRoute(p)
	in := policies.Input{
		Subject:  subject,
		Gateway:  policies.GatewayRef{ID: entry.ID, Tenant: entry.Tenant},
		Request:  policies.Request{Method: r.Method, Path: p, Route: upRoute, Host: r.Host, Country: ClientCountry(r, h.cfg.TrustedProxies)},
		ClientIP: ev.ClientIP,
		Protocol: policies.ProtocolHTTP,
		Action:   httpAction(r.Method, upRoute),
	}
	if in.Action == actionToolsInvoke {
		tool, status, reason := readTool(r, h.cfg.MaxToolBodyBytes)
		if status != 0 {
			decision = "deny"
			h.refuseAudited(sw, r, ev, audit.TypePolicyDeny, status, reason)
			return
		}
		in.Request.Tool = tool
	}
	ev.Action = in.Action

	d, err := h.deps.Policy.Decide(r.Context(), &in)
	sw.Header()[DecisionIDHeader] = []string{d.ID}
	if d.Reused {
		ev.Decision = &audit.Decision{Reused: true}
	}
	if err != nil && errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away while its request was decided: nothing was decided, nobody is
		// answered, and the policy did not fail. Counted as 499 canceled, like an upstream
		// round trip the client abandons; no log, no audit event.
		decision = "canceled"
		return
	}
	// A WebSocket client that cannot set headers (Node's WebSocket, openclaw-node) carries
	// its credential in the connect request's auth.token instead. Its upgrade is decided
	// first, so that what needs no identity (the allowlist) binds; refused only for want of
	// a credential (401), the socket is answered by the relay, which identifies and decides
	// it on that first frame before it dials the gateway. Token mode only: in trusted-proxy
	// mode the identity must be on the upgrade itself.
	if err == nil && !d.Allow && d.Status == http.StatusUnauthorized && subject.Kind == policies.SubjectAnonymous &&
		h.deps.Relay != nil && entry.AuthMode == registry.AuthToken && isUpgrade(r) && headerHasToken(r.Header, "Upgrade", "websocket") {
		h.relay(sw, r, ev, &decision, wsrelay.Session{Entry: entry, Subject: subject, Input: in, RequestID: rq.id,
			Path: p, RawQuery: r.URL.RawQuery, HTTPS: https, PublicOrigin: wsrelay.PublicOrigin(r, https),
			Identify: h.identifyCounted(ip)})
		return
	}
	if err != nil || !d.Allow {
		status, reason := d.Status, d.Reason
		if err != nil {
			// Fail closed: whatever the engine returned, an error refuses. A stale view is
			// the replica's state, not this request's: /readyz and the metrics say it once.
			decision, status, reason = "error", http.StatusServiceUnavailable, policies.FailReason(err)
			if !errors.Is(err, policies.ErrStale) {
				h.deps.Logger.LogAttrs(r.Context(), slog.LevelError, "policy evaluation failed",
					slog.String("request_id", rq.id), slog.String("gateway", entry.ID), slog.Any("err", err))
			}
		} else {
			decision = "deny"
		}
		if status == 0 {
			status = http.StatusForbidden
		}
		h.refuse(sw, r, ev, audit.TypePolicyDeny, status, reason, id, https)
		return
	}
	rq.scopes, rq.client, rq.https = d.Scopes, ev.ClientIP, https
	if isUpgrade(r) {
		// Only WebSockets are relayed, and only by the relay, which decides every message;
		// a plain pass-through would be decided once at the handshake and never again.
		if !headerHasToken(r.Header, "Upgrade", "websocket") {
			// h2c or any other protocol: never relayed, whatever the configuration.
			decision = "deny"
			h.refuseAudited(sw, r, ev, audit.TypePolicyDeny, http.StatusBadRequest, "upgrade_not_supported")
			return
		}
		if h.deps.Relay == nil {
			decision = "deny"
			h.refuseAudited(sw, r, ev, audit.TypePolicyDeny, http.StatusForbidden, "websocket_not_enabled")
			return
		}
		h.relay(sw, r, ev, &decision, wsrelay.Session{Entry: entry, Subject: subject, Expires: id.expires, Ended: id.ended, Active: h.activity(id), Input: in,
			Scopes: d.Scopes, RequestID: rq.id, Path: p, RawQuery: r.URL.RawQuery, HTTPS: rq.https,
			PublicOrigin: wsrelay.PublicOrigin(r, rq.https)})
		return
	}
	h.startSession(sw, r, entry, id, https)
	h.rp.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), requestKey{}, rq)))
}

// relay hands an upgrade to the WebSocket relay and answers what it refuses.
func (h *Handler) relay(w http.ResponseWriter, r *http.Request, ev audit.Event, decision *string, s wsrelay.Session) {
	var refusal *wsrelay.Refusal
	if err := h.deps.Relay.Serve(w, r, s); errors.As(err, &refusal) {
		*decision = "deny"
		h.refuseAudited(w, r, ev, audit.TypePolicyDeny, refusal.Status, refusal.Reason)
	}
}

// identifyToken identifies the holder of tok: a gateway token, an API token or a Clerk
// session token.
func (h *Handler) identifyToken(ctx context.Context, tok string) (policies.Subject, time.Time, int, string) {
	var never time.Time
	switch {
	case authn.IsGatewayToken(tok):
		e, found := h.deps.Gateways.ByToken(tok)
		if !found {
			return policies.Subject{Kind: policies.SubjectGatewayToken}, never, http.StatusUnauthorized, "unknown_token"
		}
		return policies.Subject{Kind: policies.SubjectGatewayToken, ID: "token:" + e.ID, Gateway: e.ID}, never, 0, ""
	case registry.ValidAPIToken(tok):
		e, id, t, found := h.deps.Gateways.ByAPIToken(tok)
		switch {
		case !found:
			return policies.Subject{Kind: policies.SubjectAPIToken}, never, http.StatusUnauthorized, "unknown_token"
		case t.Expired(h.deps.Now()):
			return policies.Subject{Kind: policies.SubjectAPIToken}, never, http.StatusUnauthorized, authn.ReasonExpired
		}
		// Its expiry, like a session token's, ends the sockets opened with it.
		return policies.Subject{Kind: policies.SubjectAPIToken, ID: id, Gateway: e.ID}, t.Expires, 0, ""
	case h.deps.Sessions == nil:
		return policies.Subject{Kind: policies.SubjectUser}, never, http.StatusUnauthorized, "sessions_disabled"
	}
	id, err := h.deps.Sessions.Verify(ctx, tok)
	if err != nil {
		reason := authn.Reason(err)
		if errors.Is(err, authn.ErrKeysUnavailable) || reason == "internal" {
			return policies.Subject{Kind: policies.SubjectUser}, never, http.StatusServiceUnavailable, reason
		}
		return policies.Subject{Kind: policies.SubjectUser}, never, http.StatusUnauthorized, reason
	}
	return policies.Subject{
		Kind: policies.SubjectUser, ID: id.UserID, SessionID: id.SessionID,
		OrgID: id.OrgID, OrgRole: id.OrgRole, FactorAges: id.FactorAges,
	}, id.Expires, 0, ""
}

// refuseAudited refuses r and records why. A failure to audit is logged; the request is
// refused either way.
func (h *Handler) refuseAudited(w http.ResponseWriter, r *http.Request, ev audit.Event, typ string, status int, reason string) {
	if !h.emit(r, withDecisionID(w, ev), typ, reason, status) {
		// Still refused, but not as if it were on record: the caller and the metrics see
		// that auditing failed.
		status, reason = http.StatusServiceUnavailable, "audit_unavailable"
	}
	Refuse(w, status, reason)
}

// Policy actions of plain HTTP requests.
const (
	actionRead        = "http.read"
	actionWrite       = "http.write"
	actionToolsInvoke = "tools.invoke"
)

// httpAction is the policy action of a request with this method to this gateway route (see
// gatewayRoute).
func httpAction(method, route string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return actionRead
	case http.MethodPost:
		// Matched loosely (case, trailing slash) so that no spelling the gateway might route
		// to its tool endpoint escapes the tool check.
		if strings.EqualFold(strings.TrimSuffix(route, "/"), "/tools/invoke") {
			return actionToolsInvoke
		}
	}
	return actionWrite
}

// capabilityPrefix starts the gateway's capability-scoped URLs: it serves
// /__openclaw__/cap/<capability>/<path> as <path> (normalizePluginNodeCapabilityScopedUrl),
// so /__openclaw__/cap/x/tools/invoke is its tool endpoint.
const capabilityPrefix = "/__openclaw__/cap/"

// gatewayRoute returns the path a normalised request path is routed by in the gateway, with
// every capability prefix removed (the gateway removes one; removing more only sends more
// requests through the tool check).
func gatewayRoute(path string) string {
	for len(path) > len(capabilityPrefix) && strings.EqualFold(path[:len(capabilityPrefix)], capabilityPrefix) {
		rest := path[len(capabilityPrefix):]
		i := strings.IndexByte(rest, '/')
		if i <= 0 {
			break
		}
		path = rest[i:]
	}
	return path
}

// readTool reads the POST /tools/invoke body, up to limit bytes, for the tool it names and
// puts the body back intact for the gateway. The gateway runs the tool named by "name", or by
// "tool" when "name" is absent or null (invokeGatewayTool: input.name ?? input.tool); a body
// whose two fields name different tools is refused rather than decided on either.
func readTool(r *http.Request, limit int64) (tool string, status int, reason string) {
	// An encoded body would be read one way here and another way upstream.
	if ce := r.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return "", http.StatusBadRequest, "bad_body"
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return "", http.StatusBadRequest, "bad_body"
	}
	if int64(len(body)) > limit {
		return "", http.StatusRequestEntityTooLarge, "body_too_large"
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.Header.Del("Transfer-Encoding")
	// Exact key match into a map, not a struct: encoding/json matches struct fields without
	// regard to case, so {"tool":"exec","TOOL":"ok"} would read as "ok" here and as "exec" in
	// the gateway's JSON.parse. A body that is not UTF-8 is refused: Go reads each invalid
	// byte as U+FFFD, the gateway's decoder a whole invalid sequence as one.
	var fields map[string]json.RawMessage
	if !utf8.Valid(body) || json.Unmarshal(body, &fields) != nil {
		return "", http.StatusBadRequest, "bad_body"
	}
	var names []string
	for _, key := range []string{"name", "tool"} {
		raw, ok := fields[key]
		if !ok || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
			continue
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", http.StatusBadRequest, "bad_body"
		}
		names = append(names, s)
	}
	if len(names) == 0 {
		return "", 0, ""
	}
	if len(names) == 2 && policies.CanonicalName(names[0]) != policies.CanonicalName(names[1]) {
		return "", http.StatusBadRequest, "ambiguous_tool"
	}
	return names[0], 0, ""
}

func isUpgrade(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" || headerHasToken(r.Header, "Connection", "upgrade")
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for part := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}

func (h *Handler) newRequestID() string {
	b := make([]byte, 0, 32)
	b = append(b, h.reqPrefix...)
	b = strconv.AppendUint(b, h.reqSeq.Add(1), 16)
	return string(b)
}

func peerAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// statusWriter remembers the status sent, for metrics. Unwrap keeps Flush and Hijack
// reachable through http.ResponseController.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 && code >= 200 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) status() int {
	if w.code == 0 {
		return StatusClientClosed
	}
	return w.code
}
