package main_test

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
)

// controlUIUser is the member who opens the Control UI: an operator, whose role lets them
// chat but caps their scopes below what the Control UI asks for.
const controlUIUser = "user_cui_operator"

// controlUIViewer is a member with the viewer role: they may look, not change.
const controlUIViewer = "user_cui_viewer"

// operatorScopes are what moltgate's default policy grants the operator role (roles.json).
var operatorScopes = []string{"operator.read", "operator.write", "operator.questions"}

// controlUIScopes are the scopes the Control UI asks for (its default set); the
// trusted-proxy gateway grants them to every user (gateway.auth.identityScopes), so what a
// session ends up with below that is moltgate's cap.
var controlUIScopes = []string{"operator.admin", "operator.read", "operator.write", "operator.approvals", "operator.questions", "operator.pairing"}

// TestControlUI: a person opens a gateway's Control UI through moltgate in a real Chromium,
// signed in with a Clerk session cookie, in both of the gateway's auth modes (issue 10, "The
// Control UI connects"). The page loads, its socket connects (the page says Connected, and
// the gateway answered hello-ok), a message typed into the chat is answered by the local
// model stand-in, and removing the member closes the socket.
//
// Token mode needs nothing of the gateway beyond its token: moltgate sends the gateway its
// own upstream origin, and the browser's device proof goes through with the token in
// auth.password, so the gateway pairs the browser silently as a local device. Trusted-proxy
// mode needs the gateway to list moltgate's public origin in gateway.controlUi.allowedOrigins
// and to grant the users scopes (identityScopes); the Control UI is admitted device-less.
func TestControlUI(t *testing.T) {
	t.Run("token", func(t *testing.T) {
		gw := testenv.SharedOpenClaw(t, testenv.OpenClawOptions{Token: gatewayToken})
		llm := testenv.NewLLM(t, llmReply)
		patchGatewayConfig(t, gw, llm.ProviderConfig("moltgate-llm", "stand-in-1"))
		tap := testenv.Tap(t, gw.URL)
		port := testenv.FreePort(t)
		controlUI(t, controlUISetup{gw: gw, tap: tap, llm: llm, mgPort: port, browserPort: port,
			wantOrigin: func(string) string { return tap.URL }})
	})
	t.Run("trusted-proxy", func(t *testing.T) {
		llm := testenv.NewLLM(t, llmReply)
		// The browser reaches moltgate through a front proxy (as it would through Cloudflare)
		// that names it by a public address: the gateway refuses a loopback client in
		// trusted-proxy mode (proxy_attribution_required).
		mgPort, frontPort := testenv.FreePort(t), testenv.FreePort(t)
		frontProxy(t, frontPort, fmt.Sprintf("http://127.0.0.1:%d", mgPort), "203.0.113.70")
		public := fmt.Sprintf("http://gwcui.gw.localhost:%d", frontPort)
		extra := llm.ProviderConfig("moltgate-llm", "stand-in-1")
		extra["gateway"] = map[string]any{"controlUi": map[string]any{"allowedOrigins": []string{public}}}
		gw := testenv.OpenClaw(t, testenv.OpenClawOptions{Mode: testenv.ModeTrustedProxy,
			TrustedProxyUsers: []string{controlUIUser, controlUIViewer, "user_cui_owner"},
			IdentityScopes:    map[string][]string{controlUIUser: controlUIScopes, controlUIViewer: controlUIScopes, "user_cui_owner": controlUIScopes},
			ExtraConfig:       extra})
		tap := testenv.Tap(t, gw.URL)
		controlUI(t, controlUISetup{gw: gw, tap: tap, llm: llm, mgPort: mgPort, browserPort: frontPort,
			trustedProxies: "[127.0.0.2]", wantOrigin: func(public string) string { return public }})
	})
}

type controlUISetup struct {
	gw  *testenv.OpenClawGateway
	tap *testenv.TapServer
	llm *testenv.LLM
	// mgPort is moltgate's proxy port on 127.0.0.1, browserPort the port the browser opens
	// gateways on (the same, or a front proxy's).
	mgPort, browserPort int
	trustedProxies      string // moltgate's trusted_proxies, YAML; "" for none
	// wantOrigin is the Origin the gateway must receive, given the gateway's public origin.
	wantOrigin func(public string) string
}

func controlUI(t *testing.T, s controlUISetup) {
	clerk := clerktest.New(t)
	config := fmt.Sprintf(`
listen: 127.0.0.1:%d
admin_listen: @ADMIN@
data_dir: @DATA@
admin_token: {file: @ADMINTOKEN@}
`, s.mgPort)
	if s.trustedProxies != "" {
		config += "trusted_proxies: " + s.trustedProxies + "\n"
	}
	mg := startMoltgate(t, config+clerkConfig(t, clerk))
	args := []string{"gateway", "add", "--id", "gwcui", "--tenant", "tenant-cui", "--owner", "user_cui_owner", "--upstream", s.tap.URL}
	if s.gw.Mode == testenv.ModeTrustedProxy {
		args = append(args, "--auth-mode", "trusted-proxy")
	} else {
		tokFile := filepath.Join(t.TempDir(), "gw.token")
		if err := os.WriteFile(tokFile, []byte(s.gw.Token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--token-file", tokFile)
	}
	mg.cli(t, args...)
	mg.cli(t, "gateway", "member", "add", "gwcui", controlUIUser, "operator")
	mg.cli(t, "gateway", "member", "add", "gwcui", controlUIViewer, "viewer")
	public := fmt.Sprintf("http://gwcui.gw.localhost:%d", s.browserPort)

	b := testenv.Browser(t)
	b.SetCookie(public, "__session", clerk.Mint(clerktest.Claims{Subject: controlUIUser, Expiry: time.Now().Add(15 * time.Minute)}))

	t.Run("page loads and its socket connects", func(t *testing.T) {
		if err := b.Do(60*time.Second, chromedp.Navigate(public+"/")); err != nil {
			t.Fatalf("open %s: %v", public, err)
		}
		// The page's own word that it is connected: its connection status (a live region
		// that reads "Connected") and an enabled chat composer.
		if err := waitPage(b, 90*time.Second, `[...document.querySelectorAll('[role=status]')].some(e => e.textContent.trim() === 'Connected') &&
			!!document.querySelector('textarea[aria-label="Chat composer"]:not([disabled])')`); err != nil {
			t.Fatalf("the Control UI never showed Connected with a chat composer: %v", err)
		}
		b.Screenshot("connected-" + s.gw.Mode)

		// The page's connect: the Control UI with its own device identity, and no token (no one
		// pasted one). The token-mode gateway admits no Control UI without a device proof.
		f, ok := b.WaitWSFrame(10*time.Second, func(f testenv.WSFrame) bool { return f.Sent && strings.Contains(f.Data, `"connect"`) })
		if !ok {
			t.Fatal("the page never sent connect")
		}
		var connect struct {
			Params struct {
				Client map[string]any `json:"client"`
				Device map[string]any `json:"device"`
				Auth   map[string]any `json:"auth"`
			} `json:"params"`
		}
		if err := json.Unmarshal([]byte(f.Data), &connect); err != nil {
			t.Fatalf("connect frame %.300s: %v", f.Data, err)
		}
		if connect.Params.Client["id"] != "openclaw-control-ui" || connect.Params.Device["signature"] == nil || connect.Params.Auth["token"] != nil {
			t.Errorf("the page connected as %v with device %v and auth %v, want the Control UI with a signed device and no token",
				connect.Params.Client, connect.Params.Device, connect.Params.Auth)
		}

		// What the gateway answered the page's connect: hello-ok, with moltgate's role cap.
		f, ok = b.WaitWSFrame(10*time.Second, func(f testenv.WSFrame) bool { return !f.Sent && strings.Contains(f.Data, `"hello-ok"`) })
		if !ok {
			t.Fatal("the page never received the gateway's hello-ok")
		}
		var hello struct {
			OK      bool `json:"ok"`
			Payload struct {
				Type string         `json:"type"`
				Auth map[string]any `json:"auth"`
			} `json:"payload"`
		}
		if err := json.Unmarshal([]byte(f.Data), &hello); err != nil || !hello.OK || hello.Payload.Type != "hello-ok" {
			t.Fatalf("hello-ok frame %.300s: %v", f.Data, err)
		}
		wantMethod := "token"
		if s.gw.Mode == testenv.ModeTrustedProxy {
			wantMethod = "trusted-proxy"
		}
		if got := hello.Payload.Auth["method"]; got != wantMethod {
			t.Errorf("hello-ok auth.method %v, want %s", got, wantMethod)
		}
		var scopes []string
		for _, sc := range hello.Payload.Auth["scopes"].([]any) {
			scopes = append(scopes, sc.(string))
		}
		if !sameSet(scopes, operatorScopes) {
			t.Errorf("the gateway granted the operator %q, want %q (moltgate's cap)", scopes, operatorScopes)
		}
		// A device token would let the browser sign in to the gateway without moltgate.
		for _, k := range []string{"deviceToken", "deviceTokens"} {
			if _, ok := hello.Payload.Auth[k]; ok {
				t.Errorf("hello-ok reached the browser with auth.%s", k)
			}
		}

		// What the gateway saw of the upgrade: moltgate's checked origin, never the browser's
		// cookie or a credential of the client.
		rec, ok := s.tap.WaitFor(func(r testenv.Recorded) bool { return r.Upgrade == "websocket" && r.Status == 101 }, 10*time.Second)
		if !ok {
			t.Fatal("the gateway saw no accepted upgrade")
		}
		if got, want := rec.Header.Get("Origin"), s.wantOrigin(public); got != want {
			t.Errorf("the gateway's upgrade had Origin %q, want %q", got, want)
		}
		if c := rec.Header.Get("Cookie"); strings.Contains(c, "__session") {
			t.Errorf("the gateway's upgrade carried the Clerk session cookie")
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("a chat message is answered by the model", func(t *testing.T) {
		const prompt = "hello from a browser through moltgate"
		composer := `textarea[aria-label="Chat composer"]`
		if err := b.Do(30*time.Second,
			chromedp.Click(chromedp.CSS(composer)),
			chromedp.SendKeys(chromedp.CSS(composer), prompt),
			chromedp.SendKeys(chromedp.CSS(composer), kb.Enter),
		); err != nil {
			t.Fatalf("type into the chat: %v", err)
		}
		if err := waitPage(b, 180*time.Second, fmt.Sprintf(`[...document.querySelectorAll('.chat-thread')].some(e => e.innerText.includes(%q))`, llmReply)); err != nil {
			b.Screenshot("chat-failed-" + s.gw.Mode)
			for _, e := range mg.events(t) {
				if e.Gateway == "gwcui" && e.Outcome == "deny" {
					t.Logf("refused: %s %s %v", e.Action, e.Reason, e.Details)
				}
			}
			t.Logf("llm requests: %d", s.llm.Requests())
			t.Logf("gateway log:\n%s", s.gw.LogTail(80))
			t.Fatalf("the model's answer never appeared in the page: %v", err)
		}
		b.Screenshot("chat-" + s.gw.Mode)
		if p := s.llm.Prompts(); !slices.ContainsFunc(p, func(s string) bool { return strings.Contains(s, prompt) }) {
			t.Errorf("the model never got the prompt; it got %q", p)
		}
	})

	t.Run("a viewer's page works and its configuration change never reaches the gateway", func(t *testing.T) {
		viewerChangesConfig(t, mg, s.gw, clerk, public)
	})

	t.Run("removing the member closes the socket", func(t *testing.T) {
		if _, err := mg.admin().RemoveMember(ctxTimeout(t, 30*time.Second), "gwcui", controlUIUser); err != nil {
			t.Fatalf("remove member: %v", err)
		}
		if err := waitPage(b, 30*time.Second, `![...document.querySelectorAll('[role=status]')].some(e => e.textContent.trim() === 'Connected')`); err != nil {
			t.Errorf("the page still says Connected after the member was removed: %v", err)
		}
		b.Screenshot("revoked-" + s.gw.Mode)
		var reasons []string
		for _, e := range mg.events(t) {
			if e.Type == audit.TypePolicyDeny && e.Gateway == "gwcui" {
				reasons = append(reasons, e.Reason)
			}
		}
		if !slices.Contains(reasons, "not_a_member") {
			t.Errorf("no not_a_member audit event; have %q", reasons)
		}
	})
}

// frontProxy serves a reverse proxy to target on 127.0.0.1:port until the test ends, as a
// CDN would sit in front of moltgate: it keeps the Host, reaches target from 127.0.0.2 and
// names the client clientIP in X-Forwarded-For. WebSocket upgrades pass through.
func frontProxy(t *testing.T, port int, target, clientIP string) {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Set("X-Forwarded-For", clientIP)
		},
		Transport:     &http.Transport{Proxy: nil, DialContext: d.DialContext},
		FlushInterval: -1,
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("front proxy: %v", err)
	}
	srv := &http.Server{Handler: rp}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// waitPage polls a JavaScript condition in the page until it is true or the timeout passes.
func waitPage(b *testenv.Chromium, timeout time.Duration, cond string) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := testenv.Eval[bool](b, 5*time.Second, cond)
		if err == nil && ok {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return err
			}
			return fmt.Errorf("still false after %v: %s", timeout, cond)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// deepJS is a page function that finds elements through open shadow roots (the Control UI is
// built of web components).
const deepJS = `function deep(root, pick) {
	const out = [];
	const walk = n => { for (const c of n.querySelectorAll('*')) { if (pick(c)) out.push(c); if (c.shadowRoot) walk(c.shadowRoot); } };
	walk(root);
	return out;
}`

// keepSockets is a devtools snippet run before the page's own scripts: it keeps every
// WebSocket the page opens in window.__sockets.
const keepSockets = `(() => {
	const Native = window.WebSocket;
	window.__sockets = [];
	window.WebSocket = class extends Native {
		constructor(...args) { super(...args); window.__sockets.push(this); }
	};
})()`

// viewerChangesConfig: a viewer opens the Control UI, which works (connected, its home page
// shown). Its configuration editor will not save for them: the page holds the scopes moltgate
// capped. So the viewer goes around the page, as anyone with devtools can, and sends a
// configuration change (opening a Telegram channel to everyone) on the page's own socket.
// moltgate refuses it (role_forbids, in the gateway's own "missing scope" shape), and the
// gateway's configuration stays as it was.
func viewerChangesConfig(t *testing.T, mg *instance, gw *testenv.OpenClawGateway, clerk *clerktest.Server, public string) {
	before := gatewayConfigHash(t, gw)
	b := testenv.Browser(t)
	b.OnNewDocument(keepSockets)
	b.SetCookie(public, "__session", clerk.Mint(clerktest.Claims{Subject: controlUIViewer, Expiry: time.Now().Add(15 * time.Minute)}))
	if err := b.Do(60*time.Second, chromedp.Navigate(public+"/")); err != nil {
		t.Fatalf("open %s: %v", public, err)
	}
	if err := waitPage(b, 90*time.Second, `[...document.querySelectorAll('[role=status]')].some(e => e.textContent.trim() === 'Connected')`); err != nil {
		t.Fatalf("the viewer's Control UI never showed Connected: %v", err)
	}
	b.Screenshot("viewer-home-" + gw.Mode)

	// The raw configuration editor takes the viewer's text, but its Save stays disabled.
	if err := b.Do(60*time.Second, chromedp.Navigate(public+"/settings/advanced")); err != nil {
		t.Fatalf("open the settings: %v", err)
	}
	const change = `{"channels": {"telegram": {"enabled": true, "dmPolicy": "open", "allowFrom": ["*"]}}}`
	if err := waitPage(b, 60*time.Second, fmt.Sprintf(`(() => { %s;
		const raw = deep(document, e => e.tagName === 'BUTTON' && e.textContent.trim() === 'Raw');
		if (raw.length) raw[0].click();
		const a = deep(document, e => e.tagName === 'TEXTAREA');
		if (!a.length) return false;
		a[0].focus(); a[0].value = %q; a[0].dispatchEvent(new Event('input', {bubbles: true, composed: true}));
		return true; })()`, deepJS, change)); err != nil {
		t.Fatalf("no raw configuration editor: %v", err)
	}
	saveDisabled := fmt.Sprintf(`(() => { %s; const s = deep(document, e => e.tagName === 'BUTTON' && e.textContent.trim() === 'Save'); return s.length > 0 && s.every(e => e.disabled); })()`, deepJS)
	if ok, err := testenv.Eval[bool](b, 10*time.Second, saveDisabled); err != nil || !ok {
		t.Errorf("the viewer's Save button is enabled (or missing): %v", err)
	}
	b.Screenshot("viewer-editor-" + gw.Mode)

	// Around the page: the change, sent on the page's own socket.
	forged := fmt.Sprintf(`(() => { const ws = window.__sockets.find(s => s.readyState === 1); if (!ws) return false;
		ws.send(JSON.stringify({type: "req", id: "viewer-forged-1", method: "config.patch", params: {raw: %q, baseHash: "x", note: "viewer"}}));
		return true; })()`, change)
	if ok, err := testenv.Eval[bool](b, 10*time.Second, forged); err != nil || !ok {
		t.Fatalf("no open socket in the page to send on: %v", err)
	}
	f, ok := b.WaitWSFrame(20*time.Second, func(f testenv.WSFrame) bool { return !f.Sent && strings.Contains(f.Data, `"viewer-forged-1"`) })
	if !ok {
		t.Fatal("the forged change was never answered")
	}
	var res struct {
		OK    bool `json:"ok"`
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Details struct {
				Code         string `json:"code"`
				MissingScope string `json:"missingScope"`
			} `json:"details"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(f.Data), &res); err != nil || res.OK || res.Error.Code != "FORBIDDEN" ||
		res.Error.Details.Code != "MISSING_SCOPE" || res.Error.Details.MissingScope != "operator.admin" ||
		!strings.Contains(res.Error.Message, "role_forbids") {
		t.Fatalf("the forged change was answered %.400s (%v), want FORBIDDEN, role_forbids, missing operator.admin", f.Data, err)
	}
	var denied bool
	for _, e := range mg.events(t) {
		denied = denied || e.Type == audit.TypePolicyDeny && e.Actor.ID == controlUIViewer &&
			e.Details["method"] == "config.patch" && e.Reason == "role_forbids"
	}
	if !denied {
		t.Error("no audit event refusing the viewer's config.patch")
	}
	if after := gatewayConfigHash(t, gw); after != before {
		t.Fatalf("the gateway's configuration changed (hash %s to %s): the viewer's change reached it", before, after)
	}
}

// gatewayConfigHash is the SHA-256 of the gateway's configuration file, where every
// configuration change it accepts is written.
func gatewayConfigHash(t *testing.T, gw *testenv.OpenClawGateway) string {
	t.Helper()
	b, err := os.ReadFile(gw.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}
