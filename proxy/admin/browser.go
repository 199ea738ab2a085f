package admin

import (
	"net/http"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/proxy/browser"
)

// BrowserSessions issues launch codes and lists and ends browser sessions; browser.Sessions
// implements it.
type BrowserSessions interface {
	Issue(g browser.Grant, returnPath string) (string, time.Time, error)
	List(keep func(browser.Session) bool) ([]browser.Session, error)
	Revoke(id string) (browser.Session, bool, error)
}

// LaunchRequest is the optional body of POST /v1/gateways/{id}/launch.
type LaunchRequest struct {
	// ReturnPath is where on the gateway's host the browser goes once signed in; anything
	// but a path on that host becomes "/".
	ReturnPath string `json:"return_path,omitempty"`
}

// Launch is the answer to POST /v1/gateways/{id}/launch: a one-time link that signs the
// browser that follows it in to the gateway's host.
type Launch struct {
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (s *Server) browserRoutes() {
	if s.deps.Browser == nil || s.cfg.GatewayURL == nil {
		return
	}
	s.mux.HandleFunc("POST /v1/gateways/{id}/launch", s.launch)
	s.mux.HandleFunc("GET /v1/sessions", s.listSessions)
	s.mux.HandleFunc("DELETE /v1/sessions/{sid}", s.revokeSession)
}

// launch issues a launch link for the caller on gateway id. The caller is the person who
// will follow it: a Clerk session (the dashboard's back end passes its user's), bound into
// the code. The admin token gets one for the gateway's owner only while Clerk is off (the
// development defaults, `moltgate gateway open`): with Clerk on, operators never mint a
// session for a user.
func (s *Server) launch(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, ok := s.authorize(w, r, "admin.gateway.launch", id)
	if !ok {
		return
	}
	var req LaunchRequest
	if r.ContentLength != 0 {
		if err := decode(r, &req); err != nil {
			s.failed(w, r, c, err)
			return
		}
	}
	g, err := s.deps.Registry.Get(id)
	if err != nil {
		s.failed(w, r, c, err)
		return
	}
	var grant browser.Grant
	switch {
	case c.subject.Kind == policies.SubjectUser && c.subject.SessionID != "":
		sub := c.subject
		grant = browser.Grant{Gateway: id, UserID: sub.ID, ClerkSession: sub.SessionID, OrgID: sub.OrgID,
			OrgRole: sub.OrgRole, FactorAges: sub.FactorAges, FactorsAt: s.deps.Now()}
	case c.subject.Kind == policies.SubjectAdminToken && s.deps.Sessions == nil:
		grant = browser.Grant{Gateway: id, UserID: g.Owner}
	default:
		s.refuse(w, r, c, audit.TypeAdminDeny, http.StatusForbidden, "launch_needs_user_session")
		return
	}
	ret := browser.SafeReturn(req.ReturnPath)
	code, expires, err := s.deps.Browser.Issue(grant, ret)
	if err != nil {
		s.failed(w, r, c, err)
		return
	}
	c.ev.Details["for_user"], c.ev.Details["return_path"] = grant.UserID, ret
	s.done(w, r, c, http.StatusCreated, Launch{URL: s.cfg.GatewayURL(id) + browser.PathPrefix + "launch?code=" + code,
		ExpiresAt: expires.UTC()})
}

// listSessions lists browser sessions: a user's own; every one (filtered by ?gateway= and
// ?user=) for the admin token and platform admins.
func (s *Server) listSessions(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authorize(w, r, "admin.session.read", "")
	if !ok {
		return
	}
	q := r.URL.Query()
	gw, user := q.Get("gateway"), q.Get("user")
	all := s.seesAllSessions(r, c)
	out, err := s.deps.Browser.List(func(b browser.Session) bool {
		return (all || b.UserID == c.subject.ID) && (gw == "" || b.Gateway == gw) && (user == "" || b.UserID == user)
	})
	if err != nil {
		s.failed(w, r, c, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// revokeSession ends a browser session and closes its sockets: one's own, or any on a
// gateway whose members the caller may change.
func (s *Server) revokeSession(w http.ResponseWriter, r *http.Request) {
	sid := r.PathValue("sid")
	c, ok := s.authorize(w, r, "admin.session.revoke", "")
	if !ok {
		return
	}
	list, err := s.deps.Browser.List(func(b browser.Session) bool { return b.ID == sid })
	if err != nil {
		s.failed(w, r, c, err)
		return
	}
	if len(list) != 1 || !(list[0].UserID == c.subject.ID && c.subject.Kind == policies.SubjectUser || s.seesAllSessions(r, c) ||
		s.decides(r, c, "admin.member.write", list[0].Gateway)) {
		// Another's session is as unknown as a missing one: its existence is not told.
		s.refuse(w, r, c, audit.TypeAdminDeny, http.StatusNotFound, "unknown_session")
		return
	}
	c.ev.Gateway, c.ev.Details["session"], c.ev.Details["user"] = list[0].Gateway, sid, list[0].UserID
	if _, _, err := s.deps.Browser.Revoke(sid); err != nil {
		s.failed(w, r, c, err)
		return
	}
	s.done(w, r, c, http.StatusOK, map[string]string{"revoked": sid})
}

// seesAllSessions: the admin token and platform admins see every session.
func (s *Server) seesAllSessions(r *http.Request, c *call) bool {
	return c.subject.Kind == policies.SubjectAdminToken || s.decides(r, c, "admin.keystore.read", "")
}

// decides asks the policy about action on gateway id for the caller of c.
func (s *Server) decides(r *http.Request, c *call, action, id string) bool {
	in := policies.Input{Subject: c.subject, Gateway: policies.GatewayRef{ID: id}, ClientIP: c.ev.ClientIP,
		Protocol: policies.ProtocolAdmin, Action: action}
	if g, err := s.deps.Registry.Get(id); err == nil {
		in.Gateway.Tenant = g.Tenant
	}
	d, err := s.deps.Policy.Decide(r.Context(), &in)
	return err == nil && d.Allow
}
