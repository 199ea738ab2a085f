package main_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
)

// dashboard is a small stand-in for the platform dashboard: its sign-in page signs the
// person in (here: always as user, with a fresh Clerk session each time) and, with that
// session's token, asks moltgate's admin API for a launch link and sends the browser to it,
// as a real dashboard's back end would.
type dashboard struct {
	*httptest.Server
	signIns  atomic.Int32
	mu       sync.Mutex
	session  string // the Clerk session id of the last sign-in
	adminURL string // moltgate's admin listener
}

func newDashboard(t *testing.T, clerk *clerktest.Server, user string) *dashboard {
	d := &dashboard{}
	d.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/sign-in" {
			http.NotFound(w, r)
			return
		}
		n := d.signIns.Add(1)
		sid := fmt.Sprintf("sess_dash_%d", n)
		d.mu.Lock()
		d.session = sid
		adminURL := d.adminURL
		d.mu.Unlock()
		tok := clerk.Mint(clerktest.Claims{Subject: user, SessionID: sid})
		c := &admin.Client{BaseURL: adminURL, Token: tok, HTTP: &http.Client{Timeout: 10 * time.Second}}
		l, err := c.Launch(r.Context(), r.URL.Query().Get("gateway"), r.URL.Query().Get("return_path"))
		if err != nil {
			http.Error(w, "launch: "+err.Error(), http.StatusBadGateway)
			return
		}
		http.Redirect(w, r, l.URL, http.StatusFound)
	}))
	t.Cleanup(d.Close)
	return d
}

func (d *dashboard) lastSession() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.session
}

// TestBrowserSignIn is issue 10's sign-in, as a person does it, in a real Chromium against
// the real gateway: opening the gateway's address without identity goes to the dashboard,
// which answers with a launch link; the browser comes back signed in, with no code in its
// address bar, to a Control UI that connects. Ending the Clerk session at the dashboard
// closes the socket within the check interval, and a reload goes back to sign-in.
func TestBrowserSignIn(t *testing.T) {
	gw := testenv.SharedOpenClaw(t, testenv.OpenClawOptions{Token: gatewayToken})
	tap := testenv.Tap(t, gw.URL)
	clerk := clerktest.New(t)
	port := testenv.FreePort(t)
	dash := newDashboard(t, clerk, controlUIUser)
	mg := startMoltgate(t, fmt.Sprintf(`
listen: 127.0.0.1:%d
admin_listen: @ADMIN@
data_dir: @DATA@
admin_token: {file: @ADMINTOKEN@}
browser:
  sign_in_url: %s/sign-in
  session_check_interval: 1s
`, port, dash.URL)+clerkConfig(t, clerk))
	dash.mu.Lock()
	dash.adminURL = mg.adminURL
	dash.mu.Unlock()
	tokFile := filepath.Join(t.TempDir(), "gw.token")
	if err := os.WriteFile(tokFile, []byte(gw.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mg.cli(t, "gateway", "add", "--id", "gwsi", "--tenant", "tenant-si", "--owner", "user_si_owner", "--upstream", tap.URL, "--token-file", tokFile)
	mg.cli(t, "gateway", "member", "add", "gwsi", controlUIUser, "operator")
	public := fmt.Sprintf("http://gwsi.gw.localhost:%d", port)
	connected := `[...document.querySelectorAll('[role=status]')].some(e => e.textContent.trim() === 'Connected')`
	ready := connected + ` && !!document.querySelector('textarea[aria-label="Chat composer"]:not([disabled])')`

	b := testenv.Browser(t)
	if err := b.Do(60*time.Second, chromedp.Navigate(public+"/chat")); err != nil {
		t.Fatalf("open %s: %v", public, err)
	}
	if err := waitPage(b, 90*time.Second, ready); err != nil {
		t.Fatalf("the Control UI never showed Connected after sign-in: %v", err)
	}
	b.Screenshot("signed-in")
	href, err := testenv.Eval[string](b, 5*time.Second, `location.href`)
	if err != nil || !strings.HasPrefix(href, public+"/chat") || strings.Contains(href, "code=") {
		t.Fatalf("address after sign-in: %q, %v (want %s/chat, no code)", href, err, public)
	}
	if n := dash.signIns.Load(); n != 1 {
		t.Fatalf("sign-ins at the dashboard: got %d, want 1", n)
	}
	if _, ok := b.WaitWSFrame(10*time.Second, func(f testenv.WSFrame) bool { return !f.Sent && strings.Contains(f.Data, `"hello-ok"`) }); !ok {
		t.Fatal("the page never received the gateway's hello-ok")
	}
	var started bool
	for _, e := range mg.events(t) {
		started = started || e.Type == audit.TypeSessionStart && e.Gateway == "gwsi" && e.Actor.ID == controlUIUser
	}
	if !started {
		t.Fatal("no session.start event for the sign-in")
	}

	// The person signs out of the dashboard: Clerk ends the session; moltgate's check finds it
	// and the Control UI loses its socket.
	clerk.EndSession(dash.lastSession(), "ended")
	if err := waitPage(b, 30*time.Second, "!("+connected+")"); err != nil {
		t.Fatalf("the page still says Connected after the Clerk session ended: %v", err)
	}
	b.Screenshot("clerk-session-ended")
	// A reload goes back through sign-in and works again.
	if err := b.Do(60*time.Second, chromedp.Reload()); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if err := waitPage(b, 90*time.Second, ready); err != nil {
		t.Fatalf("no Control UI after signing in again: %v", err)
	}
	if n := dash.signIns.Load(); n != 2 {
		t.Fatalf("sign-ins at the dashboard after the reload: got %d, want 2", n)
	}
	b.Screenshot("signed-in-again")

	// The member is removed: the socket closes, and a reload goes back to sign-in, where the
	// dashboard can no longer get a launch link for them.
	removed := time.Now()
	if _, err := mg.admin().RemoveMember(ctxTimeout(t, 30*time.Second), "gwsi", controlUIUser); err != nil {
		t.Fatalf("remove member: %v", err)
	}
	if err := waitPage(b, 30*time.Second, "!("+connected+")"); err != nil {
		t.Fatalf("the page still says Connected after the member was removed: %v", err)
	}
	t.Logf("the page lost its socket %v after the member was removed", time.Since(removed).Round(time.Millisecond))
	if err := b.Do(60*time.Second, chromedp.Reload()); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if err := waitPage(b, 30*time.Second, fmt.Sprintf(`location.href.startsWith(%q) && document.body.innerText.includes("launch:")`, dash.URL+"/sign-in")); err != nil {
		href, _ := testenv.Eval[string](b, 5*time.Second, `location.href`)
		t.Fatalf("the reload did not end at the dashboard's sign-in (at %q): %v", href, err)
	}
	b.Screenshot("removed-member-at-sign-in")
	if n := dash.signIns.Load(); n != 3 {
		t.Fatalf("sign-ins at the dashboard after the removal: got %d, want 3", n)
	}
	if ss, err := mg.admin().Sessions(ctxTimeout(t, 30*time.Second), "gwsi", ""); err != nil || len(ss) != 0 {
		t.Fatalf("browser sessions on gwsi after the member's removal: %+v, %v (want none)", ss, err)
	}
}
