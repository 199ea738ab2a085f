// Package admin is moltgate's JSON admin API, served on the admin listener for the dashboard
// back end and operators, and the client the CLI uses. Every call is authenticated (the admin
// token, or a Clerk session, as Authorization: Bearer only), decided by the same policy engine
// as proxy traffic, and audited.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"mime"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/proxy"
	"github.com/moltgate/moltgate/proxy/authn"
	"github.com/moltgate/moltgate/registry"
)

// Registry is the registry as the admin API changes it.
type Registry interface {
	List() []registry.Gateway
	Get(id string) (registry.Gateway, error)
	Create(ctx context.Context, g registry.Gateway, token string) (registry.Gateway, error)
	Update(ctx context.Context, id string, change func(*registry.Gateway) error) (registry.Gateway, error)
	Delete(ctx context.Context, id string) error
	CreateAPIToken(ctx context.Context, id string, n registry.NewAPIToken) (token, tokenID string, g registry.Gateway, err error)
	RevokeAPIToken(ctx context.Context, id, tokenID string) (registry.Gateway, error)
}

// Config configures the admin API.
type Config struct {
	// AdminToken authenticates operators (Bearer). Empty disables token access.
	AdminToken []byte
	// TrustedProxies as for the proxy: whose forwarding headers give the client address.
	TrustedProxies []netip.Prefix
	// GatewayURL is a gateway's public base URL (scheme, host, port; no trailing slash), the
	// base of its launch links. Nil leaves the browser endpoints out.
	GatewayURL func(id string) string
	// ProbeInterval is the least time between two admin.probe events for one client (calls
	// no route takes). Default one minute.
	ProbeInterval time.Duration
	// AuthFailureWindow is the least time between two audit events of one client refused for
	// its failed authentications (authlimit.go). Default proxy.DefaultAuthFailureWindow.
	AuthFailureWindow time.Duration
}

// Deps are the parts the admin API works with.
type Deps struct {
	Registry Registry
	Policy   proxy.Decider
	Sessions proxy.Verifier // nil: only the admin token
	Audit    proxy.Auditor
	Logger   *slog.Logger
	// Keys and Rotator serve the tenant-key and keystore endpoints (keys.go); nil leaves
	// them out.
	Keys    KeyManager
	Rotator KeyRotator
	// Browser issues launch links and keeps browser sessions (browser.go); nil leaves them out.
	Browser BrowserSessions
	// Provisioner serves the provisioning endpoints (provision.go); nil leaves them out.
	Provisioner Provisioner
	// Evaluator serves POST /v1/policy/eval (policyeval.go); nil leaves it out.
	Evaluator Evaluator
	// Revisions serves the policy promote and rollback endpoints (policy.go); nil leaves them out.
	Revisions PolicyRevisions
	// Now is the clock of the probe summaries. Default time.Now.
	Now func() time.Time
	// Limits are the budgets of admin writes (ratelimit.go); zero: none.
	Limits Limits
	// Metrics registers the admin API's metrics. Default: not exported.
	Metrics prometheus.Registerer
	// AuthFailures is the budget of failed authentications per client address (authlimit.go),
	// the proxy's own so that a client has one budget for both; nil: no limit.
	AuthFailures proxy.FailureBudget
}

// Server serves /v1/ of the admin API, and answers every call no route takes (probe.go).
type Server struct {
	cfg  Config
	deps Deps
	mux  *http.ServeMux
	// crossOrigin refuses changes a browser sends for another site (Sec-Fetch-Site, Origin).
	crossOrigin *http.CrossOriginProtection
	probes      *proxy.ProbeLimiter
	limits      *rateLimits
	authLimit   *proxy.AuthLimit // nil: no limit
}

// maxBody bounds admin request bodies.
const maxBody = 64 << 10

// New returns the admin API handler.
func New(cfg Config, deps Deps) (*Server, error) {
	if deps.Registry == nil || deps.Policy == nil || deps.Audit == nil || deps.Logger == nil {
		return nil, errors.New("admin: Registry, Policy, Audit and Logger are required")
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	limits, err := newRateLimits(deps.Limits, deps.Metrics)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, deps: deps, mux: http.NewServeMux(), crossOrigin: http.NewCrossOriginProtection(),
		probes: proxy.NewProbeLimiter(cfg.ProbeInterval), limits: limits,
		authLimit: proxy.NewAuthLimit(deps.AuthFailures, cfg.AuthFailureWindow)}
	s.mux.HandleFunc("GET /v1/gateways", s.list)
	s.mux.HandleFunc("POST /v1/gateways", s.create)
	s.mux.HandleFunc("GET /v1/gateways/{id}", s.show)
	s.mux.HandleFunc("DELETE /v1/gateways/{id}", s.remove)
	s.mux.HandleFunc("PUT /v1/gateways/{id}/members/{user}", s.putMember)
	s.mux.HandleFunc("DELETE /v1/gateways/{id}/members/{user}", s.deleteMember)
	s.mux.HandleFunc("PUT /v1/gateways/{id}/allowlist", s.putAllowlist)
	s.mux.HandleFunc("PUT /v1/gateways/{id}/skills", s.putSkills)
	s.apiTokenRoutes()
	s.keyRoutes()
	s.auditRoutes()
	s.browserRoutes()
	s.provisionRoutes()
	s.policyRoutes()
	s.policyEvalRoutes()
	// No catch-all: what no route takes is ServeHTTP's, recorded as probing (probe.go).
	return s, nil
}

// Gateway is a gateway as the admin API shows it: never a token, hash or ciphertext.
type Gateway struct {
	ID     string `json:"id"`
	Tenant string `json:"tenant"`
	Owner  string `json:"owner"`
	// Upstream is the gateway's internal address, shown only to those who administer the
	// gateway (admin.gateway.upstream.read); empty and left out for anyone else.
	Upstream string            `json:"upstream,omitempty"`
	AuthMode registry.AuthMode `json:"auth_mode"`
	Members  map[string]string `json:"members"`
	// APITokens are the gateway's API tokens, by id: never a token or its hash.
	APITokens []APIToken          `json:"api_tokens"`
	Allowlist []string            `json:"allowlist"`
	Skills    registry.SkillRules `json:"skills"`
	Created   time.Time           `json:"created"`
	Revision  uint64              `json:"revision"`
}

// shown is g as the caller of c may see it: its upstream URL, an internal address that
// would help an attacker inside the network, only when the policy allows
// admin.gateway.upstream.read (the owner, members with the admin role, platform admins,
// the admin token), never to viewers and operators.
func (s *Server) shown(ctx context.Context, c *call, g registry.Gateway) Gateway {
	v := view(g)
	in := policies.Input{Subject: c.subject, Gateway: policies.GatewayRef{ID: g.ID, Tenant: g.Tenant},
		ClientIP: c.ev.ClientIP, Protocol: policies.ProtocolAdmin, Action: "admin.gateway.upstream.read"}
	if d, err := s.deps.Policy.Decide(ctx, &in); err != nil || !d.Allow {
		v.Upstream = ""
	}
	return v
}

func view(g registry.Gateway) Gateway {
	v := Gateway{ID: g.ID, Tenant: g.Tenant, Owner: g.Owner, Upstream: g.Upstream, AuthMode: g.AuthMode,
		Members: g.Members, APITokens: apiTokensView(g), Allowlist: g.Allowlist, Skills: g.Skills, Created: g.Created, Revision: g.Revision}
	if v.Members == nil {
		v.Members = map[string]string{}
	}
	if v.Allowlist == nil {
		v.Allowlist = []string{}
	}
	return v
}

// CreateRequest is the body of POST /v1/gateways.
type CreateRequest struct {
	ID       string            `json:"id"`
	Tenant   string            `json:"tenant"`
	Owner    string            `json:"owner"`
	Upstream string            `json:"upstream"`
	AuthMode registry.AuthMode `json:"auth_mode,omitempty"`
	// Token is the gateway's existing token; empty generates one, returned once.
	Token string `json:"token,omitempty"`
}

// CreateResponse is the answer to POST /v1/gateways. Token is set only when generated.
type CreateResponse struct {
	Gateway Gateway `json:"gateway"`
	Token   string  `json:"token,omitempty"`
}

// MemberRequest is the body of PUT /v1/gateways/{id}/members/{user}.
type MemberRequest struct {
	Role string `json:"role"`
}

// AllowlistRequest is the body of PUT /v1/gateways/{id}/allowlist.
type AllowlistRequest struct {
	CIDRs []string `json:"cidrs"`
}

// call is one admin request after authentication.
type call struct {
	subject policies.Subject
	ev      audit.Event
}

// authorize identifies the caller and asks the policy about action on gateway id ("" for
// none). It answers the refusal itself and returns ok=false when the call may not go on.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, action, id string) (*call, bool) {
	return s.authorizeFor(w, r, action, id, "")
}

// authorizeFor is authorize for a call about a tenant rather than one gateway (tenant keys):
// the policy input carries the tenant with no gateway id.
func (s *Server) authorizeFor(w http.ResponseWriter, r *http.Request, action, id, tenant string) (*call, bool) {
	c := &call{ev: audit.Event{Action: action, Gateway: id, ClientIP: clientAddr(r, s.cfg.TrustedProxies),
		PolicyRevision: s.deps.Policy.Revision(), Details: map[string]string{"method": r.Method, "path": r.URL.Path}}}
	// Every event of the call, refusals before authentication included, is filed under the
	// tenant it is about, so that tenant's admins see it: the gateway's (looked up by the
	// path's id alone; the answer does not depend on it), else the tenant in the path.
	if id != "" {
		if g, err := s.deps.Registry.Get(id); err == nil {
			tenant = g.Tenant
		}
	}
	c.ev.Tenant = tenant
	if status, reason := s.forged(r); status != 0 {
		// Refused before the credential is read: a forged request changes nothing.
		c.ev.Actor = audit.Actor{Kind: policies.SubjectAnonymous}
		s.refuse(w, r, c, audit.TypeAdminDeny, status, reason)
		return nil, false
	}
	addr := proxy.ClientIP(r, s.cfg.TrustedProxies)
	if s.authBlocked(w, r, c, addr) {
		return nil, false
	}
	subject, status, reason := s.identify(r)
	c.subject, c.ev.Actor = subject, audit.Actor{Kind: subject.Kind, ID: subject.ID}
	if status == http.StatusUnauthorized {
		s.authFailed(r, addr) // a credential was sent and refused; a missing one guesses nothing
	}
	if status == 0 && subject.Kind == policies.SubjectAnonymous {
		status, reason = http.StatusUnauthorized, "unauthenticated"
	}
	if status != 0 {
		s.refuse(w, r, c, audit.TypeAuthnFailure, status, reason)
		return nil, false
	}
	in := policies.Input{Subject: subject, Gateway: policies.GatewayRef{ID: id, Tenant: tenant}, ClientIP: c.ev.ClientIP,
		Protocol: policies.ProtocolAdmin, Action: action, Request: policies.Request{Method: r.Method, Path: r.URL.Path, Host: r.Host}}
	if !s.limitCaller(w, r, c) {
		return nil, false
	}
	d, err := s.deps.Policy.Decide(r.Context(), &in)
	w.Header()[proxy.DecisionIDHeader] = []string{d.ID}
	if err != nil && errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The caller went away while its call was decided: nothing was decided or done, and
		// the policy did not fail (no error log, no policy_error event).
		return nil, false
	}
	if err != nil {
		s.deps.Logger.LogAttrs(r.Context(), slog.LevelError, "admin: policy evaluation failed", slog.Any("err", err))
		s.refuse(w, r, c, audit.TypeAdminDeny, http.StatusServiceUnavailable, "policy_error")
		return nil, false
	}
	if !d.Allow {
		status := d.Status
		if status == 0 {
			status = http.StatusForbidden
		}
		s.refuse(w, r, c, audit.TypeAdminDeny, status, d.Reason)
		return nil, false
	}
	if !s.limitTenant(w, r, c) {
		return nil, false
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		// The request goes on record before the change is made, as Vault audits a request
		// before serving it: a change that cannot be recorded is not made. Its outcome
		// (admin.change, or admin.deny for invalid input) follows.
		req := c.ev
		req.Type, req.Outcome, req.Details = audit.TypeAdminRequest, audit.OutcomeAllow, maps.Clone(c.ev.Details)
		if !s.emit(r.Context(), req) {
			proxy.Refuse(w, http.StatusServiceUnavailable, "audit_unavailable")
			return nil, false
		}
	}
	return c, true
}

// forged refuses what a browser may send on behalf of another site's page. The credential
// is the Authorization header only, which such a page cannot attach without a CORS preflight
// this API never grants; these checks hold even so. A change must come from no browser or
// the same origin (Sec-Fetch-Site, else Origin, as http.CrossOriginProtection decides), and
// declare a JSON body: an HTML form or a "simple" fetch cannot send Content-Type
// application/json without that preflight.
func (s *Server) forged(r *http.Request) (int, string) {
	if s.crossOrigin.Check(r) != nil {
		return http.StatusForbidden, "cross_origin"
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return 0, ""
	}
	ct := r.Header.Values("Content-Type")
	if len(ct) != 1 {
		return http.StatusUnsupportedMediaType, "unsupported_media_type"
	}
	typ, params, err := mime.ParseMediaType(ct[0])
	if err != nil || typ != "application/json" || (params["charset"] != "" && !strings.EqualFold(params["charset"], "utf-8")) {
		return http.StatusUnsupportedMediaType, "unsupported_media_type"
	}
	return 0, ""
}

// identify authenticates the caller by the Authorization header alone. The Clerk session
// cookie is the proxy's, for browsers; here it is ignored, since a browser attaches it to a
// forged cross-site request by itself.
func (s *Server) identify(r *http.Request) (policies.Subject, int, string) {
	anon := policies.Subject{Kind: policies.SubjectAnonymous}
	tok, ok, err := authn.Bearer(r)
	switch {
	case err != nil:
		return anon, http.StatusUnauthorized, authn.Reason(err)
	case !ok:
		return anon, 0, ""
	case len(s.cfg.AdminToken) > 0 && subtle.ConstantTimeCompare([]byte(tok), s.cfg.AdminToken) == 1:
		// Constant-time: the comparison's duration must not tell how much of a guess was right.
		return policies.Subject{Kind: policies.SubjectAdminToken, ID: "admin-token"}, 0, ""
	case s.deps.Sessions == nil || authn.IsGatewayToken(tok):
		// Gateway tokens are for proxy traffic only.
		return anon, http.StatusUnauthorized, "unknown_token"
	}
	id, err := s.deps.Sessions.Verify(r.Context(), tok)
	if err != nil {
		if errors.Is(err, authn.ErrKeysUnavailable) {
			return anon, http.StatusServiceUnavailable, authn.Reason(err)
		}
		return policies.Subject{Kind: policies.SubjectUser}, http.StatusUnauthorized, authn.Reason(err)
	}
	return policies.Subject{Kind: policies.SubjectUser, ID: id.UserID, SessionID: id.SessionID,
		OrgID: id.OrgID, OrgRole: id.OrgRole, FactorAges: id.FactorAges}, 0, ""
}

// refuse records the refusal of c and answers it.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, c *call, typ string, status int, reason string) {
	s.answer(w, r, c, typ, "deny", status, reason, "")
}

// answer records how c ended (a refusal, or an error) and answers status with reason and msg,
// or the status's standard message when msg is empty. Every path that does not succeed ends
// here: one that cannot be recorded is answered 503 audit_unavailable, never as if it were.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, c *call, typ, outcome string, status int, reason, msg string) {
	c.ev.Type, c.ev.Outcome, c.ev.Reason = typ, outcome, reason
	c.ev.Details["status"] = strconv.Itoa(status)
	c.ev.Decision = &audit.Decision{DecisionID: proxy.DecisionID(w)}
	switch {
	case !s.emit(r.Context(), c.ev):
		proxy.Refuse(w, http.StatusServiceUnavailable, "audit_unavailable")
	case msg == "":
		proxy.Refuse(w, status, reason)
	default:
		writeJSON(w, status, map[string]string{"error": msg, "reason": reason})
	}
}

// done audits a successful change and answers it. The change is made, and its request is
// on record, so it is answered as made even if this event cannot be written (emit logs it).
func (s *Server) done(w http.ResponseWriter, r *http.Request, c *call, status int, body any) {
	c.ev.Type, c.ev.Outcome = audit.TypeAdminChange, "success"
	s.emit(r.Context(), c.ev)
	writeJSON(w, status, body)
}

// emit records ev; false (and logged) if it could not.
func (s *Server) emit(ctx context.Context, ev audit.Event) bool {
	if err := s.deps.Audit.Emit(ctx, ev); err != nil {
		s.deps.Logger.LogAttrs(ctx, slog.LevelError, "admin: audit emit failed", slog.Any("err", err))
		return false
	}
	return true
}

// errUnknownMember is the refusal to remove a user who is not a member of the gateway.
var errUnknownMember = errors.New("admin: not a member")

// failed answers a registry error: invalid input is 400 with the validation message (it
// names fields and values the caller sent, never secrets), anything else is internal.
func (s *Server) failed(w http.ResponseWriter, r *http.Request, c *call, err error) {
	switch {
	case errors.Is(err, errUnknownMember):
		s.answer(w, r, c, audit.TypeAdminDeny, "deny", http.StatusNotFound, "unknown_member",
			fmt.Sprintf("%s is not a member of gateway %s", c.ev.Details["member"], c.ev.Gateway))
	case errors.Is(err, registry.ErrUnknownAPIToken):
		s.answer(w, r, c, audit.TypeAdminDeny, "deny", http.StatusNotFound, "unknown_api_token",
			fmt.Sprintf("gateway %s has no API token %q", c.ev.Gateway, c.ev.Details["api_token"]))
	case errors.Is(err, registry.ErrNotFound):
		s.refuse(w, r, c, audit.TypeAdminDeny, http.StatusNotFound, "unknown_gateway")
	case errors.Is(err, registry.ErrExists):
		s.answer(w, r, c, audit.TypeAdminDeny, "deny", http.StatusConflict, "gateway_exists", "gateway exists")
	case errors.Is(err, registry.ErrInvalid), errors.Is(err, errBadBody):
		s.answer(w, r, c, audit.TypeAdminDeny, "deny", http.StatusBadRequest, "invalid", invalidMessage(err))
	default:
		s.deps.Logger.LogAttrs(r.Context(), slog.LevelError, "admin: change failed", slog.Any("err", err))
		s.answer(w, r, c, audit.TypeAdminChange, "error", http.StatusServiceUnavailable, "internal", "")
	}
}

// invalidMessage is the message of an invalid request: each problem on its own line, without
// the prefix of the package that found it, so that the answer says "invalid" once, in its
// reason code.
func invalidMessage(err error) string {
	return strings.ReplaceAll(err.Error(), registry.ErrInvalid.Error()+": ", "")
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authorize(w, r, "admin.gateway.list", "")
	if !ok {
		return
	}
	out := []Gateway{}
	for _, g := range s.deps.Registry.List() {
		// Each gateway is shown only if the caller may read it: a tenant lists its own.
		in := policies.Input{Subject: c.subject, Gateway: policies.GatewayRef{ID: g.ID, Tenant: g.Tenant},
			ClientIP: c.ev.ClientIP, Protocol: policies.ProtocolAdmin, Action: "admin.gateway.read"}
		if d, err := s.deps.Policy.Decide(r.Context(), &in); err == nil && d.Allow {
			out = append(out, s.shown(r.Context(), c, g))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authorize(w, r, "admin.gateway.create", "")
	if !ok {
		return
	}
	var req CreateRequest
	if err := decode(r, &req); err != nil {
		s.failed(w, r, c, err)
		return
	}
	token, generated := req.Token, false
	if token == "" {
		var err error
		if token, err = authn.NewGatewayToken(); err != nil {
			s.failed(w, r, c, err)
			return
		}
		generated = true
	}
	g, err := s.deps.Registry.Create(r.Context(), registry.Gateway{ID: req.ID, Tenant: req.Tenant,
		Owner: req.Owner, Upstream: req.Upstream, AuthMode: req.AuthMode}, token)
	if err != nil {
		// The events are labelled from stored records, never from the body: a create of an
		// existing id is about that gateway, and must not file an event under the tenant the
		// body names.
		if errors.Is(err, registry.ErrExists) {
			if old, gerr := s.deps.Registry.Get(req.ID); gerr == nil {
				c.ev.Gateway, c.ev.Tenant = old.ID, old.Tenant
			}
		}
		s.failed(w, r, c, err)
		return
	}
	c.ev.Gateway, c.ev.Tenant = g.ID, g.Tenant
	resp := CreateResponse{Gateway: s.shown(r.Context(), c, g)}
	if generated {
		resp.Token = token
	}
	c.ev.Details["owner"] = g.Owner
	s.done(w, r, c, http.StatusCreated, resp)
}

func (s *Server) show(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, ok := s.authorize(w, r, "admin.gateway.read", id)
	if !ok {
		return
	}
	g, err := s.deps.Registry.Get(id)
	if err != nil {
		s.failed(w, r, c, err)
		return
	}
	writeJSON(w, http.StatusOK, s.shown(r.Context(), c, g))
}

func (s *Server) remove(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, ok := s.authorize(w, r, "admin.gateway.delete", id)
	if !ok {
		return
	}
	old, err := s.deps.Registry.Get(id)
	if err == nil {
		err = s.deps.Registry.Delete(r.Context(), id)
	}
	if err != nil {
		s.failed(w, r, c, err)
		return
	}
	c.ev.Details["old"] = compact(view(old))
	s.done(w, r, c, http.StatusOK, map[string]string{"deleted": id})
}

func (s *Server) putMember(w http.ResponseWriter, r *http.Request) {
	id, user := r.PathValue("id"), r.PathValue("user")
	c, ok := s.authorize(w, r, "admin.member.write", id)
	if !ok {
		return
	}
	var req MemberRequest
	if err := decode(r, &req); err != nil {
		s.failed(w, r, c, err)
		return
	}
	c.ev.Details["member"], c.ev.Details["role"] = user, req.Role
	s.update(w, r, c, id, memberRole(user), func(g *registry.Gateway) error {
		if g.Members == nil {
			g.Members = map[string]string{}
		}
		g.Members[user] = req.Role
		return nil
	})
}

func (s *Server) deleteMember(w http.ResponseWriter, r *http.Request) {
	id, user := r.PathValue("id"), r.PathValue("user")
	c, ok := s.authorize(w, r, "admin.member.write", id)
	if !ok {
		return
	}
	c.ev.Details["member"] = user
	s.update(w, r, c, id, memberRole(user), func(g *registry.Gateway) error {
		if _, ok := g.Members[user]; !ok {
			return errUnknownMember
		}
		delete(g.Members, user)
		return nil
	})
}

func (s *Server) putAllowlist(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, ok := s.authorize(w, r, "admin.allowlist.write", id)
	if !ok {
		return
	}
	var req AllowlistRequest
	if err := decode(r, &req); err != nil {
		s.failed(w, r, c, err)
		return
	}
	// Written now, so checked as written: a CIDR with host bits set is refused with its
	// normal forms rather than stored as a network its writer may not have meant.
	var errs []error
	for i, cidr := range req.CIDRs {
		if err := registry.CheckCIDR(cidr); err != nil {
			errs = append(errs, fmt.Errorf("%w: allowlist[%d]: %w", registry.ErrInvalid, i, err))
		}
	}
	if len(errs) > 0 {
		s.failed(w, r, c, errors.Join(errs...))
		return
	}
	s.update(w, r, c, id, func(g Gateway) any { return g.Allowlist },
		func(g *registry.Gateway) error { g.Allowlist = slices.Clone(req.CIDRs); return nil })
}

func (s *Server) putSkills(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, ok := s.authorize(w, r, "admin.skills.write", id)
	if !ok {
		return
	}
	var req registry.SkillRules
	if err := decode(r, &req); err != nil {
		s.failed(w, r, c, err)
		return
	}
	if err := contradictory(req); err != nil {
		s.failed(w, r, c, err)
		return
	}
	s.update(w, r, c, id, func(g Gateway) any { return g.Skills }, func(g *registry.Gateway) error { g.Skills = req; return nil })
}

// update changes gateway id. Its admin.change event records the value changed, as value picks
// it from the gateway's view (which holds no secret), before and after: details old and new.
func (s *Server) update(w http.ResponseWriter, r *http.Request, c *call, id string, value func(Gateway) any,
	change func(*registry.Gateway) error) {
	var old string
	g, err := s.deps.Registry.Update(r.Context(), id, func(g *registry.Gateway) error {
		old = compact(value(view(*g))) // now: change may edit what the view shares (members)
		return change(g)
	})
	if err != nil {
		s.failed(w, r, c, err)
		return
	}
	c.ev.Details["old"], c.ev.Details["new"] = old, compact(value(view(g)))
	s.done(w, r, c, http.StatusOK, s.shown(r.Context(), c, g))
}

// contradictory refuses skill rules that name one tool or skill on both sides, as the
// gateway resolves names (policies.CanonicalName: "bash" is "exec"): deny wins, so the allow
// entry would only look like it did something.
func contradictory(rules registry.SkillRules) error {
	denied := map[string]string{}
	for _, d := range rules.Deny {
		denied[policies.CanonicalName(d)] = d
	}
	var errs []error
	for _, a := range rules.Allow {
		d, ok := denied[policies.CanonicalName(a)]
		switch {
		case !ok:
		case d == a:
			errs = append(errs, fmt.Errorf("%w: skills: %q is both allowed and denied (deny wins): name it on one side", registry.ErrInvalid, a))
		default:
			errs = append(errs, fmt.Errorf("%w: skills: %q (allowed) and %q (denied) name the same tool (deny wins): name it on one side",
				registry.ErrInvalid, a, d))
		}
	}
	return errors.Join(errs...)
}

// memberRole picks user's role from a gateway, null when user is not a member.
func memberRole(user string) func(Gateway) any {
	return func(g Gateway) any {
		if role, ok := g.Members[user]; ok {
			return role
		}
		return nil
	}
}

// compact is v as compact JSON, for an event's details.
func compact(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func clientAddr(r *http.Request, trusted []netip.Prefix) string {
	a := proxy.ClientIP(r, trusted)
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
