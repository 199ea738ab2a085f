package proxy_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
	"github.com/moltgate/moltgate/proxy/browser"
	"github.com/moltgate/moltgate/registry"
)

// browse sends one request as a browser would and returns the response, never following a
// redirect. cookie is the moltgate cookie's value ("" for none); hdr adds headers.
func (f *fixture) browse(t *testing.T, method, host, target, cookie string, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, f.srv.URL+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	if cookie != "" {
		req.AddCookie(&http.Cookie{Name: browser.CookieHTTP, Value: cookie})
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := *f.srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// navigate is a page load: what a browser sends when a person opens a URL.
var navigate = map[string]string{"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document",
	"Accept": "text/html,application/xhtml+xml"}

func sessionCookie(t *testing.T, resp *http.Response) *http.Cookie {
	t.Helper()
	for _, c := range resp.Cookies() {
		if c.Name == browser.CookieHTTP {
			return c
		}
	}
	t.Fatalf("no %s cookie in %v", browser.CookieHTTP, resp.Header.Values("Set-Cookie"))
	return nil
}

func (f *fixture) launchCode(t *testing.T, gateway, user, ret string) string {
	t.Helper()
	code, _, err := f.browsers.Issue(browser.Grant{Gateway: gateway, UserID: user}, browser.SafeReturn(ret))
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// TestBrowserLaunch is issue 10's sign-in: a launch link gives a browser a host-only
// session cookie and sends it on, leaving no code behind; the cookie then identifies it on
// that gateway only, and a refused code, cookie or cross-site change is audited.
func TestBrowserLaunch(t *testing.T) {
	f := newFixture(t, registry.AuthToken)
	code := f.launchCode(t, "gwa", "user_viewer", "/chat?session=main")

	resp := f.browse(t, "GET", "gwa.gw.localhost", "/.moltgate/launch?code="+code, "", navigate)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/chat?session=main" {
		t.Fatalf("launch: got %d to %q, want 303 to /chat?session=main", resp.StatusCode, resp.Header.Get("Location"))
	}
	if got := resp.Header.Get("Referrer-Policy"); got != "no-referrer" {
		t.Fatalf("launch Referrer-Policy: got %q, want no-referrer (the code must not leak)", got)
	}
	c := sessionCookie(t, resp)
	if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Domain != "" || c.Path != "/" {
		t.Fatalf("cookie: got %+v, want HttpOnly, SameSite=Lax, host-only, path /", c)
	}
	if e, _ := f.lastEvent(t); e.Type != audit.TypeSessionStart || e.Actor.ID != "user_viewer" || e.Gateway != "gwa" {
		t.Fatalf("audit: got %+v, want session.start of user_viewer on gwa", e)
	}

	// The cookie identifies the viewer on gwa; the gateway never sees it.
	if resp := f.browse(t, "GET", "gwa.gw.localhost", "/health", c.Value, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("request with the session: got %d, want 200", resp.StatusCode)
	}
	up, _ := f.up.last(t)
	if got := up.Header.Get("Cookie"); strings.Contains(got, "moltgate") {
		t.Fatalf("gateway received moltgate's cookie: %q", got)
	}
	// The viewer role still binds: a write is refused by policy.
	if resp := f.browse(t, "POST", "gwa.gw.localhost", "/hooks/x", c.Value, map[string]string{"Origin": "http://gwa.gw.localhost"}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer write: got %d, want 403", resp.StatusCode)
	}

	refusals := []struct {
		name, host, target, cookie string
		hdr                        map[string]string
		status                     int
		reason                     string
	}{
		{"reused code", "gwa.gw.localhost", "/.moltgate/launch?code=" + code, "", nil, 401, "bad_launch"},
		{"tampered code", "gwa.gw.localhost", "/.moltgate/launch?code=" + flip(f.launchCode(t, "gwa", "user_viewer", "/")), "", nil, 401, "bad_launch"},
		{"malformed code", "gwa.gw.localhost", "/.moltgate/launch?code=" + strings.Repeat("A", 5000), "", nil, 401, "bad_launch"},
		{"no code", "gwa.gw.localhost", "/.moltgate/launch", "", nil, 401, "bad_launch"},
		{"other gateway's code", "gwb.gw.localhost", "/.moltgate/launch?code=" + f.launchCode(t, "gwa", "user_viewer", "/"), "", nil, 401, "launch_wrong_gateway"},
		{"tampered cookie", "gwa.gw.localhost", "/health", flip(c.Value), nil, 401, "bad_session"},
		{"gateway A's cookie on B", "gwb.gw.localhost", "/health", c.Value, nil, 401, "wrong_gateway"},
		{"cross-site POST", "gwa.gw.localhost", "/tools/invoke", c.Value, map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, 403, "csrf"},
		{"POST with no origin proof", "gwa.gw.localhost", "/tools/invoke", c.Value, nil, 403, "csrf"},
		{"moltgate path", "gwa.gw.localhost", "/.moltgate/anything", c.Value, nil, 404, "no_such_endpoint"},
	}
	for _, r := range refusals {
		seen := f.up.count()
		method := "GET"
		if strings.Contains(r.name, "POST") {
			method = "POST"
		}
		resp := f.browse(t, method, r.host, r.target, r.cookie, r.hdr)
		if resp.StatusCode != r.status {
			t.Fatalf("%s: got %d, want %d", r.name, resp.StatusCode, r.status)
		}
		if f.up.count() != seen {
			t.Fatalf("%s: the gateway received the request", r.name)
		}
		if e, _ := f.lastEvent(t); e.Reason != r.reason || e.Outcome != "deny" {
			t.Fatalf("%s: audit got %s/%s, want deny/%s", r.name, e.Outcome, e.Reason, r.reason)
		}
	}

	// An expired code, and a session past its idle timeout, are refused.
	late := f.launchCode(t, "gwa", "user_viewer", "/")
	f.clock.Advance(61 * time.Second)
	if resp := f.browse(t, "GET", "gwa.gw.localhost", "/.moltgate/launch?code="+late, "", nil); resp.StatusCode != 401 {
		t.Fatalf("expired code: got %d, want 401", resp.StatusCode)
	}
	f.clock.Advance(31 * time.Minute)
	if resp := f.browse(t, "GET", "gwa.gw.localhost", "/health", c.Value, nil); resp.StatusCode != 401 {
		t.Fatalf("idle session: got %d, want 401", resp.StatusCode)
	}
}

// flip changes the first character of a token to another token character.
func flip(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}

// TestBrowserSignInRedirect: a page navigation without identity goes to the dashboard's
// sign-in with the gateway and a return path on the same host; fetches keep their 401; a
// failed cookie is cleared; a return path can never point elsewhere.
func TestBrowserSignInRedirect(t *testing.T) {
	f := newFixture(t, registry.AuthToken)
	resp := f.browse(t, "GET", "gwa.gw.localhost", "/chat?x=1", "", navigate)
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || loc.Host != "dashboard.example.test" ||
		loc.Query().Get("gateway") != "gwa" || loc.Query().Get("return_path") != "/chat?x=1" {
		t.Fatalf("anonymous navigation: got %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp := f.browse(t, "GET", "gwa.gw.localhost", "/chat", "", map[string]string{"Accept": "application/json"}); resp.StatusCode != 401 {
		t.Fatalf("anonymous fetch: got %d, want 401", resp.StatusCode)
	}
	resp = f.browse(t, "GET", "gwa.gw.localhost", "/", flip(strings.Repeat("x", 43)), navigate)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("navigation with a bad cookie: got %d, want 303", resp.StatusCode)
	}
	if c := sessionCookie(t, resp); c.MaxAge >= 0 {
		t.Fatalf("bad cookie not cleared: %+v", c)
	}
	for in, want := range map[string]string{
		"/a/b?c=d": "/a/b?c=d", "//evil.example/x": "/", "https://evil.example/": "/", `/\evil.example`: "/",
		"/%2F%2Fevil.example": "/", "": "/", "chat": "/", "/a\r\nSet-Cookie: x": "/",
		"/.moltgate/launch?code=x": "/", "/ok#frag": "/ok", "/" + strings.Repeat("a", 3000): "/",
	} {
		if got := browser.SafeReturn(in); got != want {
			t.Errorf("SafeReturn(%q): got %q, want %q", in, got, want)
		}
	}
}

// TestBrowserClerkCookieExchange: a browser with a valid Clerk __session cookie gets
// moltgate's session on its first navigation, with no detour.
func TestBrowserClerkCookieExchange(t *testing.T) {
	f := newFixture(t, registry.AuthToken)
	hdr := map[string]string{"Cookie": "__session=" + f.user("user_operator")}
	for k, v := range navigate {
		hdr[k] = v
	}
	resp := f.browse(t, "GET", "gwa.gw.localhost", "/", "", hdr)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("navigation with a Clerk cookie: got %d, want 200", resp.StatusCode)
	}
	c := sessionCookie(t, resp)
	ss, err := f.browsers.List(func(s browser.Session) bool { return true })
	if err != nil || len(ss) != 1 || ss[0].UserID != "user_operator" || ss[0].ClerkSession != clerktest.DefaultSessionID {
		t.Fatalf("sessions: got %+v, %v", ss, err)
	}
	if resp := f.browse(t, "GET", "gwa.gw.localhost", "/health", c.Value, nil); resp.StatusCode != 200 {
		t.Fatalf("with the exchanged session: got %d", resp.StatusCode)
	}
}

// TestBrowserSessionFollowsClerk: a session ends when its Clerk session does (checked in the
// background, never on a request), and fails closed when Clerk cannot confirm it for longer
// than the grace.
func TestBrowserSessionFollowsClerk(t *testing.T) {
	f := newFixture(t, registry.AuthToken)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { f.browsers.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	start := func(sid string) string {
		tok, _, err := f.browsers.Start(browser.Grant{Gateway: "gwa", UserID: "user_viewer", ClerkSession: sid})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	ended, unreachable := start("sess_ended"), start("sess_unreachable")
	gets := f.clerk.SessionGets()
	for range 3 {
		if resp := f.browse(t, "GET", "gwa.gw.localhost", "/health", ended, nil); resp.StatusCode != 200 {
			t.Fatalf("fresh session: got %d", resp.StatusCode)
		}
	}
	if f.clerk.SessionGets() != gets {
		t.Fatal("a request with a browser session called Clerk")
	}

	f.clerk.EndSession("sess_ended", "revoked")
	f.clock.Advance(61 * time.Second)
	testenv.WaitUntil(t, "the revoked Clerk session's browser session to end", 20*time.Second, func() bool {
		return f.browse(t, "GET", "gwa.gw.localhost", "/health", ended, nil).StatusCode == 401
	})
	if resp := f.browse(t, "GET", "gwa.gw.localhost", "/health", unreachable, nil); resp.StatusCode != 200 {
		t.Fatalf("a session whose Clerk session is active: got %d, want 200", resp.StatusCode)
	}

	// Clerk down: the session lasts the grace past its last good check, then fails closed.
	f.clerk.SetSessionFail(http.StatusServiceUnavailable)
	f.clock.Advance(2 * time.Minute)
	if resp := f.browse(t, "GET", "gwa.gw.localhost", "/health", unreachable, nil); resp.StatusCode != 200 {
		t.Fatalf("within the grace: got %d, want 200", resp.StatusCode)
	}
	f.clock.Advance(5 * time.Minute)
	if resp := f.browse(t, "GET", "gwa.gw.localhost", "/health", unreachable, nil); resp.StatusCode != 401 {
		t.Fatalf("past the grace with Clerk down: got %d, want 401", resp.StatusCode)
	}
	if e, _ := f.lastEvent(t); e.Reason != "session_unverified" {
		t.Fatalf("audit reason: got %q, want session_unverified", e.Reason)
	}
}

// TestGatewayCannotSetSessionCookies: a gateway's Set-Cookie for moltgate's cookie (session
// fixation) or with a Domain (every tenant's host would get it) never reaches the browser.
func TestGatewayCannotSetSessionCookies(t *testing.T) {
	f := newFixture(t, registry.AuthToken)
	resp := f.browse(t, "GET", "gwa.gw.localhost", "/set-cookies", "", bearer(tokA))
	got := resp.Header.Values("Set-Cookie")
	if len(got) != 1 || !strings.HasPrefix(got[0], "own=1") {
		t.Fatalf("Set-Cookie reaching the browser: got %q, want only own=1", got)
	}
}

// TestWSLivesWithTheBrowserSession: a Control UI talks over its socket only, so its messages
// keep the session from idling out; revoking the session closes the socket at once.
func TestWSLivesWithTheBrowserSession(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	tok, sess, err := f.browsers.Start(browser.Grant{Gateway: "gwa", UserID: "user_operator"})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"Cookie": {browser.CookieHTTP + "=" + tok}, "Origin": {"https://app.example.test"}}
	c, resp, err := f.dial(t, "gwa.gw.localhost", h)
	if err != nil {
		t.Fatalf("dial with the session cookie: %v (%v)", err, resp)
	}
	if err := handshake(t.Context(), c.c); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		f.clock.Advance(20 * time.Minute)
		if res := c.call("status", nil); res["ok"] != true {
			t.Fatalf("status: %v", res)
		}
	}
	// 40 minutes since the last HTTP request, but the socket was in use all along.
	if resp := f.browse(t, "GET", "gwa.gw.localhost", "/health", tok, nil); resp.StatusCode != 200 {
		t.Fatalf("session after 40 min of socket use: got %d, want 200", resp.StatusCode)
	}
	if _, found, err := f.browsers.Revoke(sess.ID); !found || err != nil {
		t.Fatalf("revoke: %v %v", found, err)
	}
	if code, reason := c.closed(); code != websocket.StatusPolicyViolation || reason != "session ended" {
		t.Fatalf("socket after revoke: got %d %q, want 1008 session ended", code, reason)
	}
}

// TestBrowserSessionOfRemovedMember: once a session's user is no longer a member of its
// gateway, a fetch is refused 403 not_a_member, and a page load ends the session and goes
// back to sign-in (issue 10, "a reload goes back to sign-in"); the session stays over when
// the member is added again: they come back through a new launch link.
func TestBrowserSessionOfRemovedMember(t *testing.T) {
	f := newFixture(t, registry.AuthToken)
	tok, _, err := f.browsers.Start(browser.Grant{Gateway: "gwa", UserID: "user_operator"})
	if err != nil {
		t.Fatal(err)
	}
	if resp := f.browse(t, "GET", "gwa.gw.localhost", "/", tok, navigate); resp.StatusCode != 200 {
		t.Fatalf("member's page load: got %d, want 200", resp.StatusCode)
	}
	setMember := func(role string) {
		t.Helper()
		if _, err := f.reg.Update(t.Context(), "gwa", func(g *registry.Gateway) error {
			if role == "" {
				delete(g.Members, "user_operator")
			} else {
				g.Members["user_operator"] = role
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	setMember("")
	seen := f.up.count()
	if resp := f.browse(t, "GET", "gwa.gw.localhost", "/api/x", tok, nil); resp.StatusCode != 403 {
		t.Fatalf("removed member's fetch: got %d, want 403", resp.StatusCode)
	}
	if ss, _ := f.browsers.List(func(browser.Session) bool { return true }); len(ss) != 1 {
		t.Fatalf("a fetch ended the session (%d left): only a page load does", len(ss))
	}
	resp := f.browse(t, "GET", "gwa.gw.localhost", "/chat", tok, navigate)
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || loc.Host != "dashboard.example.test" || loc.Query().Get("return_path") != "/chat" {
		t.Fatalf("removed member's page load: got %d to %q, want 303 to the sign-in page", resp.StatusCode, loc)
	}
	if c := sessionCookie(t, resp); c.MaxAge >= 0 {
		t.Fatalf("the session cookie was not cleared: %+v", c)
	}
	if e, _ := f.lastEvent(t); e.Reason != "not_a_member" || e.Actor.ID != "user_operator" {
		t.Fatalf("audit: got %s by %s, want not_a_member by user_operator", e.Reason, e.Actor.ID)
	}
	if f.up.count() != seen {
		t.Fatal("the gateway received a removed member's request")
	}
	if ss, _ := f.browsers.List(func(browser.Session) bool { return true }); len(ss) != 0 {
		t.Fatalf("the session outlived its user's access: %+v", ss)
	}
	setMember("operator")
	if resp := f.browse(t, "GET", "gwa.gw.localhost", "/api/x", tok, nil); resp.StatusCode != 401 {
		t.Fatalf("the ended session after re-adding the member: got %d, want 401", resp.StatusCode)
	}
}
