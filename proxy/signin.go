package proxy

import (
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/proxy/authn"
	"github.com/moltgate/moltgate/proxy/browser"
	"github.com/moltgate/moltgate/registry"
)

// How a request was identified, when by a cookie: a browser's, so changes need CSRF proof.
const (
	viaHeader = iota
	viaSession
	viaClerkCookie
)

// identity is who a request is from, as identify found it.
type identity struct {
	subject policies.Subject
	expires time.Time
	status  int
	reason  string
	via     int
	ended   <-chan struct{} // a browser session's end
	session string          // the browser session's id
}

// activity is what marks id's browser session in use while its socket is, or nil.
func (h *Handler) activity(id identity) func() {
	if id.session == "" {
		return nil
	}
	return func() { h.deps.Browser.Touch(id.session) }
}

// identify returns who r is from: a bearer token; else moltgate's session cookie, valid
// only on its own gateway; else Clerk's __session cookie. A credential that fails gives a
// refusal status and reason.
func (h *Handler) identify(r *http.Request, gateway string, https bool) identity {
	anon := policies.Subject{Kind: policies.SubjectAnonymous}
	tok, ok, err := authn.Bearer(r)
	if err != nil {
		return identity{subject: anon, status: http.StatusUnauthorized, reason: authn.Reason(err)}
	}
	if ok {
		return h.identityOf(r, tok, viaHeader)
	}
	if h.deps.Browser != nil {
		tok, ok, err := browser.Token(r, https)
		if err != nil {
			return identity{subject: anon, status: http.StatusUnauthorized, reason: "bad_session", via: viaSession}
		}
		if ok {
			sess, ended, err := h.deps.Browser.Lookup(tok, gateway)
			if err != nil {
				status, reason := http.StatusUnauthorized, browser.Reason(err)
				if reason == "internal" {
					status = http.StatusServiceUnavailable
					h.deps.Logger.LogAttrs(r.Context(), slog.LevelError, "browser session lookup failed", slog.Any("err", err))
				}
				return identity{subject: policies.Subject{Kind: policies.SubjectUser}, status: status, reason: reason, via: viaSession}
			}
			return identity{subject: policies.Subject{Kind: policies.SubjectUser, ID: sess.UserID, SessionID: sess.ClerkSession,
				OrgID: sess.OrgID, OrgRole: sess.OrgRole, FactorAges: sess.AgesNow(time.Now())},
				expires: sess.Expires, via: viaSession, ended: ended, session: sess.ID}
		}
	}
	tok, ok, err = authn.Credential(r)
	switch {
	case err != nil:
		return identity{subject: anon, status: http.StatusUnauthorized, reason: authn.Reason(err), via: viaClerkCookie}
	case !ok:
		return identity{subject: anon}
	}
	return h.identityOf(r, tok, viaClerkCookie)
}

func (h *Handler) identityOf(r *http.Request, tok string, via int) identity {
	s, exp, status, reason := h.identifyToken(r.Context(), tok)
	return identity{subject: s, expires: exp, status: status, reason: reason, via: via}
}

// refuse refuses r and records why. A navigation refused for want of identity is sent to
// sign in instead, when sign-in is configured, and a session cookie that failed is cleared.
// So is a navigation on a browser session whose user is no longer a member of the gateway:
// the session, good for this gateway only, is worth nothing now and ends, and the sign-in
// page (the dashboard) tells the person what access they have.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, ev audit.Event, typ string, status int, reason string, id identity, https bool) {
	lost := id.via == viaSession && id.session != "" && reason == "not_a_member"
	if (status != http.StatusUnauthorized && !lost) || h.cfg.SignInURL == nil || !browser.IsNavigation(r) {
		h.refuseAudited(w, r, ev, typ, status, reason)
		return
	}
	if !h.emit(r, ev, typ, reason, status) {
		Refuse(w, http.StatusServiceUnavailable, "audit_unavailable")
		return
	}
	if lost {
		if tok, ok, _ := browser.Token(r, https); ok {
			h.deps.Browser.EndToken(tok, "access_lost")
		}
	}
	if id.via == viaSession {
		browser.ClearCookie(w, https)
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, browser.SignInURL(h.cfg.SignInURL, ev.Gateway, r.URL.RequestURI()), http.StatusSeeOther)
}

// startSession gives a browser that came with a valid Clerk session cookie moltgate's own
// session on its first navigation, so the page goes on working when the Clerk token (a
// minute's life) expires. Failure only means no cookie this time.
func (h *Handler) startSession(w http.ResponseWriter, r *http.Request, entry *registry.Entry, id identity, https bool) {
	if h.deps.Browser == nil || id.via != viaClerkCookie || id.subject.Kind != policies.SubjectUser || !browser.IsNavigation(r) {
		return
	}
	s := id.subject
	tok, sess, err := h.deps.Browser.Start(browser.Grant{Gateway: entry.ID, UserID: s.ID, ClerkSession: s.SessionID,
		OrgID: s.OrgID, OrgRole: s.OrgRole, FactorAges: s.FactorAges, FactorsAt: time.Now()})
	if err != nil {
		h.deps.Logger.LogAttrs(r.Context(), slog.LevelWarn, "browser session not started", slog.Any("err", err))
		return
	}
	browser.SetCookie(w, tok, https, sess.Expires)
}

// serveBrowser answers moltgate's own paths on a gateway host: the launch link and sign-out.
// Nothing under browser.PathPrefix reaches a gateway.
func (h *Handler) serveBrowser(w http.ResponseWriter, r *http.Request, entry *registry.Entry, ev audit.Event, path string, https bool) string {
	if h.deps.Browser == nil {
		h.refuseAudited(w, r, ev, audit.TypePolicyDeny, http.StatusNotFound, "no_such_endpoint")
		return "deny"
	}
	switch {
	case path == browser.PathPrefix+"launch" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		return h.launch(w, r, entry, ev, https)
	case path == browser.PathPrefix+"signout" && r.Method == http.MethodPost:
		if !browser.SameOrigin(r, https) {
			h.refuseAudited(w, r, ev, audit.TypePolicyDeny, http.StatusForbidden, "csrf")
			return "deny"
		}
		if tok, ok, _ := browser.Token(r, https); ok {
			h.deps.Browser.SignOut(tok)
		}
		browser.ClearCookie(w, https)
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return "allow"
	}
	h.refuseAudited(w, r, ev, audit.TypePolicyDeny, http.StatusNotFound, "no_such_endpoint")
	return "deny"
}

// launch spends a launch code: the browser gets its session cookie and is sent on to the
// return path, by a redirect that leaves the code neither in the address bar nor in a Referer.
func (h *Handler) launch(w http.ResponseWriter, r *http.Request, entry *registry.Entry, ev audit.Event, https bool) string {
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("Cache-Control", "no-store")
	tok, sess, ret, err := h.deps.Browser.Redeem(r.URL.Query().Get("code"), entry.ID)
	if err != nil {
		reason := browser.Reason(err)
		if reason == "internal" {
			h.deps.Logger.LogAttrs(r.Context(), slog.LevelError, "launch failed", slog.Any("err", err))
			h.refuseAudited(w, r, ev, audit.TypeAuthnFailure, http.StatusServiceUnavailable, reason)
			return "error"
		}
		if reason == "wrong_gateway" {
			reason = "launch_wrong_gateway"
		} else {
			reason = "bad_launch" // unknown, used, expired or malformed: told apart in the metrics only
		}
		h.m.authnFailed.WithLabelValues(reason).Inc()
		h.authFailed(r.Context(), ClientIP(r, h.cfg.TrustedProxies))
		h.refuse(w, r, ev, audit.TypeAuthnFailure, http.StatusUnauthorized, reason, identity{}, https)
		return "unauthenticated"
	}
	ev.Type, ev.Outcome, ev.Action = audit.TypeSessionStart, "success", "browser.launch"
	ev.Actor = audit.Actor{Kind: policies.SubjectUser, ID: sess.UserID}
	ev.Details = map[string]string{"session": sess.ID, "expires": sess.Expires.UTC().Format(time.RFC3339)}
	if err := h.deps.Audit.Emit(r.Context(), ev); err != nil {
		// A sign-in that cannot be recorded does not happen.
		h.deps.Browser.SignOut(tok)
		Refuse(w, http.StatusServiceUnavailable, "audit_unavailable")
		return "error"
	}
	browser.SetCookie(w, tok, https, sess.Expires)
	http.Redirect(w, r, ret, http.StatusSeeOther)
	return "allow"
}

// emit records a refusal; false if it could not be.
func (h *Handler) emit(r *http.Request, ev audit.Event, typ, reason string, status int) bool {
	ev.Type, ev.Outcome, ev.Reason = typ, "deny", reason
	ev.PolicyRevision = h.deps.Policy.Revision()
	if ev.Details == nil {
		ev.Details = map[string]string{"method": r.Method, "status": strconv.Itoa(status)}
	}
	if err := h.deps.Audit.Emit(r.Context(), ev); err != nil {
		h.deps.Logger.LogAttrs(r.Context(), slog.LevelError, "audit emit failed",
			slog.String("request_id", ev.RequestID), slog.Any("err", err))
		return false
	}
	return true
}

// unsafeMethod: a method that may change state.
func unsafeMethod(m string) bool {
	return m != http.MethodGet && m != http.MethodHead && m != http.MethodOptions
}
