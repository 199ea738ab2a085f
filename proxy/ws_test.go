package proxy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
	"github.com/moltgate/moltgate/proxy/wsrelay"
	"github.com/moltgate/moltgate/registry"
)

// wsGateway is the WebSocket side of the stand-in upstream: it speaks just enough of the
// OpenClaw protocol (challenge, connect → hello-ok, req → res) to test the relay's mechanics.
// The end-to-end tests run the same flows against a real OpenClaw gateway.
type wsGateway struct {
	mu       sync.Mutex
	frames   []map[string]any // client frames that reached the gateway
	upgrades []http.Header
	// closeWith, when set, makes the gateway close every socket after hello-ok.
	closeWith websocket.StatusCode
	// flood makes the gateway send this many 64 KiB events after hello-ok.
	flood int
	// ticks makes the gateway send this many tick events after hello-ok, tickEvery apart.
	ticks     int
	tickEvery time.Duration
	// helloAuth, when set, is the auth object of hello-ok (JSON).
	helloAuth string
}

func (u *upstream) serveWS(w http.ResponseWriter, r *http.Request) {
	g := &u.ws
	g.mu.Lock()
	g.upgrades = append(g.upgrades, r.Header.Clone())
	closeWith, flood, ticks, tickEvery, helloAuth := g.closeWith, g.flood, g.ticks, g.tickEvery, g.helloAuth
	g.mu.Unlock()
	// The real gateway judges the Origin itself (the end-to-end tests show it accepts
	// moltgate's); the stand-in records it.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx := r.Context()
	c.Write(ctx, websocket.MessageText, []byte(`{"type":"event","event":"connect.challenge","payload":{"nonce":"n1"}}`))
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		var f map[string]any
		if json.Unmarshal(data, &f) != nil {
			return
		}
		g.mu.Lock()
		g.frames = append(g.frames, f)
		g.mu.Unlock()
		id, _ := json.Marshal(f["id"])
		payload := `{"method":` + mustJSON(f["method"]) + `}`
		if f["method"] == "connect" {
			payload = `{"type":"hello-ok"}`
			if helloAuth != "" {
				payload = `{"type":"hello-ok","auth":` + helloAuth + `}`
			}
		}
		c.Write(ctx, websocket.MessageText, []byte(`{"type":"res","id":`+string(id)+`,"ok":true,"payload":`+payload+`}`))
		if f["method"] == "connect" && closeWith != 0 {
			c.Close(closeWith, "gateway says bye")
			return
		}
		if f["method"] == "connect" && ticks > 0 {
			go func() {
				for i := range ticks {
					time.Sleep(tickEvery)
					if c.Write(ctx, websocket.MessageText, []byte(fmt.Sprintf(`{"type":"event","event":"tick","payload":{"n":%d}}`, i))) != nil {
						return
					}
				}
			}()
		}
		if f["method"] == "connect" && flood > 0 {
			big := `{"type":"event","event":"tick","payload":"` + strings.Repeat("x", 64<<10) + `"}`
			for range flood {
				if c.Write(ctx, websocket.MessageText, []byte(big)) != nil {
					return
				}
			}
		}
	}
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

func (g *wsGateway) methods() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for _, f := range g.frames {
		m, _ := f["method"].(string)
		out = append(out, m)
	}
	return out
}

func (g *wsGateway) frame(i int) map[string]any {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.frames[i]
}

var testWSConfig = wsrelay.Config{AllowedOrigins: []string{"https://app.example.test"}, MaxMessageBytes: 4096,
	MessagesPerSecond: 20, Burst: 40, MaxConnsPerSubject: 3, WriteTimeout: 500 * time.Millisecond}

func newWSFixture(t *testing.T, mode registry.AuthMode) *fixture {
	cfg := testWSConfig
	cfg.AllowedOrigins = append([]string(nil), cfg.AllowedOrigins...)
	return buildFixture(t, mode, &cfg)
}

// client is a test client of the relayed socket.
type client struct {
	t *testing.T
	c *websocket.Conn
	n int
}

func (f *fixture) dial(t *testing.T, host string, header http.Header) (*client, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if header == nil {
		header = http.Header{}
	}
	header.Set("Host", host)
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(f.srv.URL, "http")+"/ws", &websocket.DialOptions{
		HTTPHeader: header, Host: host,
	})
	if err != nil {
		return nil, resp, err
	}
	c.SetReadLimit(1 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return &client{t: t, c: c}, resp, nil
}

func (c *client) read() map[string]any {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), 5*time.Second)
	defer cancel()
	_, data, err := c.c.Read(ctx)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		c.t.Fatalf("frame %s: %v", data, err)
	}
	return m
}

func (c *client) send(raw string) {
	c.t.Helper()
	if err := c.c.Write(c.t.Context(), websocket.MessageText, []byte(raw)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// call sends a request and returns its response (skipping events).
func (c *client) call(method string, params any) map[string]any {
	c.t.Helper()
	c.n++
	id := "r" + string(rune('0'+c.n%10)) + strings.Repeat("x", c.n/10)
	c.send(`{"type":"req","id":"` + id + `","method":"` + method + `","params":` + mustJSON(params) + `}`)
	for {
		m := c.read()
		if m["type"] == "res" && m["id"] == id {
			return m
		}
	}
}

// closed waits for the socket to be closed and returns the close status and reason.
func (c *client) closed() (websocket.StatusCode, string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), 5*time.Second)
	defer cancel()
	for {
		_, _, err := c.c.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, ce.Reason
			}
			return websocket.CloseStatus(err), err.Error()
		}
	}
}

func bearerHeader(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}}
}

// connected dials as the bearer of tok and completes the connect handshake.
func (f *fixture) connected(t *testing.T, tok string) *client {
	t.Helper()
	c, resp, err := f.dial(t, "gwa.gw.localhost", bearerHeader(tok))
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial: %v (status %d)", err, status)
	}
	if m := c.read(); m["event"] != "connect.challenge" {
		t.Fatalf("first frame %v, want the challenge", m)
	}
	// A device proof as openclaw-node sends it: signed over the client's own credential.
	device := map[string]any{"id": "dev-1", "publicKey": "pk", "signature": "sig-over-client-guess", "signedAt": 1, "nonce": "n1"}
	if res := c.call("connect", map[string]any{"auth": map[string]any{"token": "client-guess"}, "scopes": []string{"operator.read", "operator.admin"}, "device": device}); res["ok"] != true {
		t.Fatalf("connect: %v", res)
	}
	return c
}

// No one connects through moltgate as one of the gateway's own processes (its backend
// client may keep prompts out of the transcript): such a client is named a CLI client
// upstream, and a role other than operator is refused.
func TestWSClientsConnectAsOperatorCLIs(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	// Each socket below is another user's or stays under the per-user limit of 3, so no
	// dial waits on the relay counting a closed socket out.
	users := []string{"user_viewer", "user_viewer", "user_viewer", "user_owner", "user_admin", "user_operator", "user_owner"}
	connect := func(params map[string]any) (*client, map[string]any) {
		c, _, err := f.dial(t, "gwa.gw.localhost", bearerHeader(f.user(users[0])))
		users = users[1:]
		if err != nil {
			t.Fatal(err)
		}
		c.read() // challenge
		return c, c.call("connect", params)
	}
	for _, params := range []map[string]any{
		{"role": "node"},
		{"role": []string{"operator"}},
		{"client": "cli"},
	} {
		before := len(f.up.ws.methods())
		c, res := connect(params)
		if res["ok"] != false || !strings.Contains(mustJSON(res["error"]), "_not_allowed") {
			t.Errorf("connect %v: got %v, want a refusal", params, res)
		}
		if code, _ := c.closed(); code != websocket.StatusPolicyViolation {
			t.Errorf("connect %v: socket closed with %d, want 1008", params, code)
		}
		if len(f.up.ws.methods()) != before {
			t.Errorf("connect %v reached the gateway", params)
		}
	}
	for _, tt := range []struct{ id, mode, wantID, wantMode string }{
		{"gateway-client", "backend", "cli", "cli"}, // openclaw-node's default
		{"cli", " Worker", "cli", "cli"},
		{"node-host", "ui", "cli", "ui"},
		{"openclaw-tui", "cli", "openclaw-tui", "cli"},
	} {
		n, who := len(f.up.ws.methods()), users[0]
		_, res := connect(map[string]any{"role": "operator", "client": map[string]any{"id": tt.id, "mode": tt.mode, "version": "9.9", "displayName": "boss"}})
		if res["ok"] != true {
			t.Fatalf("connect as %s/%s: %v", tt.id, tt.mode, res)
		}
		got := f.up.ws.frame(n)["params"].(map[string]any)["client"].(map[string]any)
		if got["id"] != tt.wantID || got["mode"] != tt.wantMode || got["version"] != "9.9" {
			t.Errorf("client %s/%s reached the gateway as %v, want %s/%s", tt.id, tt.mode, got, tt.wantID, tt.wantMode)
		}
		if got["displayName"] != who {
			t.Errorf("client reached the gateway named %v, want the subject %s", got["displayName"], who)
		}
	}
}

func TestWSConnectCarriesTheGatewayTokenAndCappedScopes(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	c := f.connected(t, f.user("user_viewer"))
	first := f.up.ws.frame(0)
	params := first["params"].(map[string]any)
	if auth := params["auth"].(map[string]any); auth["token"] != tokA {
		t.Fatalf("connect auth upstream: %v, want the gateway token", auth)
	}
	// The device proof signs the credential moltgate replaced: passed on, the real gateway
	// closes the socket with "device signature invalid" (found by e2e_ws_test.go).
	if d, ok := params["device"]; ok {
		t.Fatalf("connect upstream carries the client's device proof %v", d)
	}
	if scopes := mustJSON(params["scopes"]); scopes != `["operator.read"]` {
		t.Fatalf("scopes upstream: %s, want a viewer's", scopes)
	}
	if h := f.up.ws.upgrades[0]; h.Get("Origin") != "" || h.Get("Authorization") != "" || h.Get("Cookie") != "" {
		t.Fatalf("upgrade headers leaked to the gateway: %v", h)
	}
	// The gateway also caps a token-mode socket by this header: a second cap.
	if got := f.up.ws.upgrades[0].Get("X-Openclaw-Scopes"); got != "operator.read" {
		t.Fatalf("upgrade X-Openclaw-Scopes %q, want a viewer's", got)
	}
	// A viewer reads; writes and admin changes are refused in protocol form and the socket
	// stays usable.
	if res := c.call("sessions.list", map[string]any{}); res["ok"] != true {
		t.Fatalf("sessions.list: %v", res)
	}
	for _, m := range []string{"chat.send", "config.set", "terminal.open"} {
		res := c.call(m, map[string]any{})
		errObj, _ := res["error"].(map[string]any)
		if res["ok"] != false || errObj["code"] != "FORBIDDEN" {
			t.Fatalf("%s: got %v, want a FORBIDDEN res", m, res)
		}
	}
	if res := c.call("status", nil); res["ok"] != true {
		t.Fatalf("socket unusable after refusals: %v", res)
	}
	if got := strings.Join(f.up.ws.methods(), ","); got != "connect,sessions.list,status" {
		t.Fatalf("gateway received %s", got)
	}
	ev, _ := f.lastEvent(t)
	_ = ev
}

func TestWSMethodsByRole(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	fresh := []int{5, 2} // second factor 2 minutes ago
	stale := []int{5, 60}
	tests := []struct {
		name   string
		tok    string
		method string
		params any
		allow  bool
	}{
		{"operator chats", f.user("user_operator"), "chat.send", map[string]any{}, true},
		{"operator may not change config", f.user("user_operator"), "config.set", map[string]any{}, false},
		{"admin changes config", f.user("user_admin"), "config.set", map[string]any{}, true},
		{"admin may not open the terminal", f.user("user_admin"), "terminal.open", map[string]any{}, false},
		{"owner without a second factor", f.user("user_owner"), "terminal.open", map[string]any{}, false},
		{"owner with a stale second factor", f.clerk.Mint(clerktest.Claims{Subject: "user_owner", FactorAges: stale}), "exec.approval.resolve", map[string]any{}, false},
		{"owner with a fresh second factor", f.clerk.Mint(clerktest.Claims{Subject: "user_owner", FactorAges: fresh}), "terminal.open", map[string]any{}, true},
		{"gateway token is not the owner", tokA, "device.pair.approve", map[string]any{}, false},
		{"gateway token operates", tokA, "sessions.reset", map[string]any{}, true},
		{"unknown family is admin-only", f.user("user_operator"), "newfeature.do", map[string]any{}, false},
		{"operator invokes an allowed tool", f.user("user_operator"), "tools.invoke", map[string]any{"name": "sessions_list"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := f.connected(t, tt.tok)
			res := c.call(tt.method, tt.params)
			if got := res["ok"] == true; got != tt.allow {
				t.Fatalf("%s: got %v, want allow=%v", tt.method, res, tt.allow)
			}
			c.c.Close(websocket.StatusNormalClosure, "")
		})
	}
	// Skill rules bind WebSocket tool calls too.
	if _, err := f.reg.Update(t.Context(), "gwa", func(g *registry.Gateway) error { g.Skills.Deny = []string{"exec"}; return nil }); err != nil {
		t.Fatal(err)
	}
	c := f.connected(t, f.user("user_owner"))
	res := c.call("tools.invoke", map[string]any{"name": "exec"})
	if res["ok"] != false || !strings.Contains(mustJSON(res["error"]), "tool_denied") {
		t.Fatalf("denied tool: %v", res)
	}
}

// A tool or skill is decided under the name the gateway runs it by: trimmed, aliases
// resolved, read from the field the gateway reads for that method; a frame naming two
// different ones is refused. None of these may reach the gateway.
func TestWSToolNamesAsTheGatewayReadsThem(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	if _, err := f.reg.Update(t.Context(), "gwa", func(g *registry.Gateway) error {
		g.Skills.Deny = []string{"exec", "evil-skill"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	c := f.connected(t, f.user("user_owner"))
	for _, tt := range []struct {
		method string
		params map[string]any
		reason string
	}{
		{"tools.invoke", map[string]any{"name": " exec"}, "tool_denied"},
		{"tools.invoke", map[string]any{"name": "EXEC\u00a0"}, "tool_denied"},
		{"tools.invoke", map[string]any{"name": "bash"}, "tool_denied"},
		{"tools.invoke", map[string]any{"tool": "exec"}, "tool_denied"},
		{"tools.invoke", map[string]any{"name": "sessions_list", "tool": "exec"}, "ambiguous_name"},
		{"mcp.app.callTool", map[string]any{"toolName": "exec"}, "tool_denied"},
		{"mcp.app.callTool", map[string]any{"toolName": "exec", "name": "sessions_list"}, "ambiguous_name"},
		{"skills.install", map[string]any{"slug": "Evil-Skill "}, "skill_denied"},
		{"skills.install", map[string]any{"name": "ok-skill", "slug": "evil-skill"}, "ambiguous_name"},
		{"skills.update", map[string]any{"skillKey": "ok-skill", "slug": "evil-skill"}, "ambiguous_name"},
	} {
		before := len(f.up.ws.methods())
		res := c.call(tt.method, tt.params)
		if res["ok"] != false || !strings.Contains(mustJSON(res["error"]), tt.reason) {
			t.Errorf("%s %v: got %v, want a refusal for %s", tt.method, tt.params, res, tt.reason)
		}
		if got := f.up.ws.methods(); len(got) != before {
			t.Errorf("%s %v reached the gateway: %v", tt.method, tt.params, got[before:])
		}
	}
	// The same names, spelled alike, still pass.
	res := c.call("tools.invoke", map[string]any{"name": "sessions_list", "tool": " Sessions_List"})
	if res["ok"] != true {
		t.Fatalf("one tool named twice: %v", res)
	}
}

func TestWSHostileClients(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	owner := f.user("user_owner")
	tests := []struct {
		name   string
		do     func(c *client)
		status websocket.StatusCode
	}{
		{"no connect first", func(c *client) { c.send(`{"type":"req","id":"1","method":"sessions.list","params":{}}`) }, websocket.StatusPolicyViolation},
		{"not json", func(c *client) { c.send(`hello`) }, websocket.StatusPolicyViolation},
		{"not a request", func(c *client) { c.send(`{"type":"event","event":"x"}`) }, websocket.StatusPolicyViolation},
		{"binary", func(c *client) { c.c.Write(c.t.Context(), websocket.MessageBinary, []byte(`{}`)) }, websocket.StatusPolicyViolation},
		{"not utf-8", func(c *client) {
			c.send("{\"type\":\"req\",\"id\":\"1\",\"method\":\"connect\",\"params\":{\"x\":\"\xff\"}}")
		}, websocket.StatusInvalidFramePayloadData},
		{"oversized", func(c *client) {
			c.send(`{"type":"req","id":"1","method":"connect","params":{"x":"` + strings.Repeat("a", 8192) + `"}}`)
		}, websocket.StatusMessageTooBig},
		{"method spelled twice", func(c *client) {
			// Exact keys: the gateway reads "connect"; a case-insensitive reader would see "health".
			c.send(`{"type":"req","id":"1","method":"sessions.list","Method":"connect","params":{}}`)
		}, websocket.StatusPolicyViolation},
		{"flood", func(c *client) {
			c.send(`{"type":"req","id":"c","method":"connect","params":{}}`)
			for i := range 200 {
				if c.c.Write(c.t.Context(), websocket.MessageText, []byte(`{"type":"req","id":"`+string(rune('a'+i%26))+`","method":"status"}`)) != nil {
					return
				}
			}
		}, websocket.StatusPolicyViolation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := f.dial(t, "gwa.gw.localhost", bearerHeader(owner))
			if err != nil {
				t.Fatal(err)
			}
			c.read() // challenge
			before := len(f.up.ws.methods())
			tt.do(c)
			code, reason := c.closed()
			if code != tt.status {
				t.Fatalf("close: got %d %q, want %d", code, reason, tt.status)
			}
			if tt.name != "flood" && len(f.up.ws.methods()) != before {
				t.Fatalf("a refused frame reached the gateway: %v", f.up.ws.methods()[before:])
			}
		})
	}
}

func TestWSUpgradeRefusals(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	owner := f.user("user_owner")
	tests := []struct {
		name   string
		header http.Header
		status int
	}{
		{"forged origin", http.Header{"Authorization": {"Bearer " + owner}, "Origin": {"https://evil.example"}}, 403},
		{"stranger", bearerHeader(f.user("user_stranger")), 403},
		{"other tenant's token", bearerHeader(tokB), 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, resp, err := f.dial(t, "gwa.gw.localhost", tt.header)
			if err == nil || resp == nil || resp.StatusCode != tt.status {
				t.Fatalf("got %v (%v), want %d", err, resp, tt.status)
			}
		})
	}
	// The dashboard origin may connect.
	c, _, err := f.dial(t, "gwa.gw.localhost", http.Header{"Authorization": {"Bearer " + owner}, "Origin": {"https://app.example.test"}})
	if err != nil {
		t.Fatalf("allowed origin: %v", err)
	}
	c.c.Close(websocket.StatusNormalClosure, "")
	// Per-subject connection limit.
	var open []*client
	for range testWSConfig.MaxConnsPerSubject {
		open = append(open, f.connected(t, f.user("user_operator")))
	}
	if _, resp, err := f.dial(t, "gwa.gw.localhost", bearerHeader(f.user("user_operator"))); err == nil || resp.StatusCode != 429 {
		t.Fatalf("connection over the limit: %v %v", err, resp)
	}
	for _, c := range open {
		c.c.Close(websocket.StatusNormalClosure, "")
	}
}

func TestWSContinuousAuthorization(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	viewer := f.connected(t, f.user("user_viewer"))
	owner := f.connected(t, f.user("user_owner"))
	start := time.Now()
	if _, err := f.reg.Update(t.Context(), "gwa", func(g *registry.Gateway) error { delete(g.Members, "user_viewer"); return nil }); err != nil {
		t.Fatal(err)
	}
	code, reason := viewer.closed()
	if code != websocket.StatusPolicyViolation || !strings.Contains(reason, "not_a_member") || time.Since(start) > time.Second {
		t.Fatalf("removed member: got %d %q after %v", code, reason, time.Since(start))
	}
	if res := owner.call("status", nil); res["ok"] != true {
		t.Fatalf("owner's socket affected: %v", res)
	}
	// An allowlist that excludes the owner closes their socket too; removing the gateway
	// closes everything.
	if _, err := f.reg.Update(t.Context(), "gwa", func(g *registry.Gateway) error { g.Allowlist = []string{"192.0.2.0/24"}; return nil }); err != nil {
		t.Fatal(err)
	}
	if code, reason := owner.closed(); code != websocket.StatusPolicyViolation || !strings.Contains(reason, "ip_not_allowed") {
		t.Fatalf("allowlist: got %d %q", code, reason)
	}
	if _, err := f.reg.Update(t.Context(), "gwa", func(g *registry.Gateway) error { g.Allowlist = nil; return nil }); err != nil {
		t.Fatal(err)
	}
	tok := f.connected(t, tokA)
	if err := f.reg.Delete(t.Context(), "gwa"); err != nil {
		t.Fatal(err)
	}
	if code, reason := tok.closed(); code != websocket.StatusPolicyViolation || !strings.Contains(reason, "gateway removed") {
		t.Fatalf("removed gateway: got %d %q", code, reason)
	}
	evs := 0
	for _, e := range f.events(t) {
		if e.Type == audit.TypePolicyDeny && e.Action == "ws.call" {
			evs++
		}
	}
	if evs < 3 {
		t.Fatalf("revocations audited: %d, want 3", evs)
	}
}

func TestWSSessionExpiryAndRefresh(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	short := func() string {
		return f.clerk.Mint(clerktest.Claims{Subject: "user_owner", IssuedAt: time.Now(), Expiry: time.Now().Add(1500 * time.Millisecond)})
	}
	// Leeway is 5s in the verifier; the socket ends at exp itself.
	c := f.connected(t, short())
	code, reason := c.closed()
	if code != websocket.StatusPolicyViolation || reason != "session expired" {
		t.Fatalf("expiry: got %d %q", code, reason)
	}
	c2 := f.connected(t, short())
	fresh := f.clerk.Mint(clerktest.Claims{Subject: "user_owner", Expiry: time.Now().Add(time.Hour)})
	if res := c2.call(wsrelay.RefreshMethod, map[string]any{"token": fresh}); res["ok"] != true {
		t.Fatalf("refresh: %v", res)
	}
	other := f.clerk.Mint(clerktest.Claims{Subject: "user_viewer", Expiry: time.Now().Add(time.Hour)})
	if res := c2.call(wsrelay.RefreshMethod, map[string]any{"token": other}); res["ok"] != false {
		t.Fatalf("refresh as another user accepted: %v", res)
	}
	time.Sleep(2 * time.Second) // past the first token's exp: the socket must still serve
	if res := c2.call("status", nil); res["ok"] != true {
		t.Fatalf("after refresh: %v", res)
	}
	for _, m := range f.up.ws.methods() {
		if m == wsrelay.RefreshMethod {
			t.Fatal("the refresh request reached the gateway")
		}
	}
}

func TestWSClosePassesThrough(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	f.up.ws.mu.Lock()
	f.up.ws.closeWith = 4001
	f.up.ws.mu.Unlock()
	c := f.connected(t, f.user("user_owner"))
	if code, reason := c.closed(); code != 4001 || reason != "gateway says bye" {
		t.Fatalf("close passthrough: got %d %q", code, reason)
	}
}

func TestWSShutdownSendsCloseFrames(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	c := f.connected(t, f.user("user_owner"))
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f.relay.Shutdown(ctx) }()
	if code, _ := c.closed(); code != websocket.StatusGoingAway {
		t.Fatalf("shutdown close: got %d, want 1001", code)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, resp, err := f.dial(t, "gwa.gw.localhost", bearerHeader(f.user("user_owner"))); err == nil || resp.StatusCode != 503 {
		t.Fatalf("upgrade after shutdown: %v %v", err, resp)
	}
}

// Clients that cannot set headers (openclaw-node) identify in the connect request instead.
func TestWSIdentifiesOnConnect(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	tests := []struct {
		name  string
		token string
		ok    bool
		code  string
	}{
		{"no credential", "", false, "UNAUTHORIZED"},
		{"forged session", f.clerk.ForgeAlgNone(clerktest.Claims{Subject: "user_owner"}), false, "UNAUTHORIZED"},
		{"stranger", f.user("user_stranger"), false, "FORBIDDEN"},
		{"other tenant's token", tokB, false, "FORBIDDEN"},
		{"viewer session", f.user("user_viewer"), true, ""},
		{"gateway token", tokA, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := f.dial(t, "gwa.gw.localhost", nil)
			if err != nil {
				t.Fatal(err)
			}
			c.read() // moltgate's challenge: no gateway is dialled before connect is allowed
			before := len(f.up.ws.methods())
			res := c.call("connect", map[string]any{"auth": map[string]any{"token": tt.token}})
			if ok := res["ok"] == true; ok != tt.ok {
				t.Fatalf("connect: got %v, want ok=%v", res, tt.ok)
			}
			if !tt.ok {
				if code := res["error"].(map[string]any)["code"]; code != tt.code {
					t.Fatalf("code %v, want %s", code, tt.code)
				}
				if st, _ := c.closed(); st != websocket.StatusPolicyViolation {
					t.Fatalf("close %d, want 1008", st)
				}
				if len(f.up.ws.methods()) != before {
					t.Fatal("a refused connect reached the gateway")
				}
				return
			}
			if auth := f.up.ws.frame(before)["params"].(map[string]any)["auth"].(map[string]any); auth["token"] != tokA {
				t.Fatalf("gateway got auth %v", auth)
			}
			if tt.token != tokA {
				if res := c.call("config.set", map[string]any{}); res["ok"] != false {
					t.Fatalf("viewer identified on connect may change config: %v", res)
				}
			}
			c.c.Close(websocket.StatusNormalClosure, "")
		})
	}
	// In trusted-proxy mode the identity must be on the upgrade: no deferred identification.
	tp := newWSFixture(t, registry.AuthTrustedProxy)
	if _, resp, err := tp.dial(t, "gwa.gw.localhost", nil); err == nil || resp.StatusCode != 401 {
		t.Fatalf("anonymous trusted-proxy upgrade: %v %v", err, resp)
	}
}

// closesBy returns moltgate_ws_closes_total{reason}.
func (f *fixture) closesBy(t *testing.T, reason string) float64 {
	t.Helper()
	mfs, err := f.metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "moltgate_ws_closes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// Sockets that never say who they are (no credential on the upgrade, no connect) are
// bounded per client address and end at the idle timeout when it comes before the identify
// deadline (TestWSIdentifyDeadline); so does a connected socket that falls silent, and one
// that sends connect twice is closed.
func TestWSIdleAndUnidentifiedSockets(t *testing.T) {
	cfg := testWSConfig
	cfg.IdleTimeout = 300 * time.Millisecond
	cfg.PingInterval = time.Hour // pings are not traffic: the idle timer must not care
	f := buildFixture(t, registry.AuthToken, &cfg)
	var pending []*client
	for range cfg.MaxConnsPerSubject {
		c, _, err := f.dial(t, "gwa.gw.localhost", nil)
		if err != nil {
			t.Fatal(err)
		}
		c.read() // moltgate's challenge, then nothing
		pending = append(pending, c)
	}
	if _, resp, err := f.dial(t, "gwa.gw.localhost", nil); err == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("unidentified socket over the per-address limit: %v %v, want 429", err, resp)
	}
	for _, c := range pending {
		if code, reason := c.closed(); code != websocket.StatusGoingAway || reason != "idle timeout" {
			t.Fatalf("silent unidentified socket: got %d %q, want 1001 idle timeout", code, reason)
		}
	}
	if got := f.closesBy(t, "idle"); got != float64(len(pending)) {
		t.Fatalf("idle closes counted %v, want %d", got, len(pending))
	}
	// The slots are free again once the closes are done.
	deadline := time.Now().Add(5 * time.Second)
	for f.relay.Open() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := f.relay.Open(); n != 0 {
		t.Fatalf("%d sockets still open 5s after their idle closes", n)
	}
	again, _, err := f.dial(t, "gwa.gw.localhost", nil)
	if err != nil {
		t.Fatalf("an unidentified socket after the others closed: %v (their per-address slots not freed)", err)
	}
	again.read() // the challenge
	c := f.connected(t, tokA)
	if code, reason := c.closed(); code != websocket.StatusGoingAway || reason != "idle timeout" {
		t.Fatalf("silent connected socket: got %d %q", code, reason)
	}
	c2 := f.connected(t, tokA)
	c2.send(`{"type":"req","id":"again","method":"connect","params":{}}`)
	if code, reason := c2.closed(); code != websocket.StatusPolicyViolation || reason != "connect sent twice" {
		t.Fatalf("second connect: got %d %q, want 1008", code, reason)
	}
}

// A client that stops reading while the gateway streams is dropped after WriteTimeout
// (counted as slow_reader) instead of being buffered for; other sockets are served all along.
func TestWSSlowReaderClosedOthersServed(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	fast := f.connected(t, f.user("user_operator"))
	f.up.ws.mu.Lock()
	f.up.ws.flood = 400 // 25 MiB of events: more than any socket buffer between us
	f.up.ws.mu.Unlock()
	slow, _, err := f.dial(t, "gwa.gw.localhost", bearerHeader(f.user("user_owner")))
	if err != nil {
		t.Fatal(err)
	}
	slow.read()
	slow.send(`{"type":"req","id":"c","method":"connect","params":{}}`)
	deadline := time.Now().Add(15 * time.Second)
	for f.closesBy(t, "slow_reader") == 0 && time.Now().Before(deadline) {
		if res := fast.call("status", nil); res["ok"] != true { // served all along
			t.Fatalf("other socket: %v", res)
		}
		time.Sleep(100 * time.Millisecond) // under the test's message rate limit
	}
	if f.closesBy(t, "slow_reader") != 1 {
		t.Fatalf("the slow reader was not closed as slow_reader within 15s (client_closed %v)", f.closesBy(t, "client_closed"))
	}
	// What the slow client finally reads, after the buffered events, is the end of the
	// connection: the relay was in the middle of a frame to it, so no close frame can
	// follow, and the connection is dropped.
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	var err2 error
	for err2 == nil {
		_, _, err2 = slow.c.Read(ctx)
	}
	if errors.Is(err2, context.DeadlineExceeded) {
		t.Fatal("the slow reader's connection was still open 15s later")
	}
}

// Thousands of idle relayed sockets: each is held open, counted, still served, and all of
// them end with close frames at shutdown with nothing left running (goleak in TestMain).
func TestWSThousandsOfIdleSockets(t *testing.T) {
	n := idleSockets
	cfg := testWSConfig
	cfg.MaxConnsPerSubject = n + 1
	// Thousands of handshakes on a loaded machine: a client goroutine may not be scheduled
	// to read within the half second the slow-reader tests use. This test is about holding
	// sockets, not dropping slow ones.
	cfg.WriteTimeout = 10 * time.Second
	f := buildFixture(t, registry.AuthToken, &cfg)
	clients := make([]*websocket.Conn, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	next := make(chan int)
	url := "ws" + strings.TrimPrefix(f.srv.URL, "http") + "/ws"
	for range 4 {
		wg.Go(func() {
			for i := range next {
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				var c *websocket.Conn
				var err error
				// A decision that overruns the policy timeout on a loaded machine fails
				// closed with 503; that is a refusal to retry, not a lost socket.
				for try := 0; try < 3; try++ {
					var resp *http.Response
					c, resp, err = websocket.Dial(ctx, url, &websocket.DialOptions{Host: "gwa.gw.localhost", HTTPHeader: bearerHeader(tokA)})
					if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
						break
					}
				}
				if err == nil {
					clients[i] = c
					err = handshake(ctx, c)
				}
				cancel()
				if err != nil {
					errs <- fmt.Errorf("socket %d: %w", i, err)
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	t.Cleanup(func() {
		for _, c := range clients {
			if c != nil {
				c.CloseNow()
			}
		}
	})
	for err := range errs {
		t.Fatal(err)
	}
	if got := f.relay.Open(); got != n {
		t.Fatalf("open sockets %d, want %d", got, n)
	}
	one := &client{t: t, c: clients[n/2]}
	if res := one.call("status", nil); res["ok"] != true {
		t.Fatalf("an idle socket among %d: %v", n, res)
	}
	// Shutdown: every client reads a 1001 close frame.
	closed := make(chan websocket.StatusCode, n)
	for _, c := range clients {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			for {
				if _, _, err := c.Read(ctx); err != nil {
					closed <- websocket.CloseStatus(err)
					return
				}
			}
		}()
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := f.relay.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown of %d sockets: %v", n, err)
	}
	for range n {
		if code := <-closed; code != websocket.StatusGoingAway {
			t.Fatalf("a socket ended with %d at shutdown, want 1001", code)
		}
	}
	if got := f.relay.Open(); got != 0 {
		t.Fatalf("%d sockets open after shutdown", got)
	}
}

// handshake reads the challenge, sends connect and reads its answer.
func handshake(ctx context.Context, c *websocket.Conn) error {
	if _, _, err := c.Read(ctx); err != nil {
		return err
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"req","id":"c","method":"connect","params":{}}`)); err != nil {
		return err
	}
	_, data, err := c.Read(ctx)
	if err != nil {
		return err
	}
	if !strings.Contains(string(data), `"ok":true`) {
		return fmt.Errorf("connect: %s", data)
	}
	return nil
}

// A socket reuses its decisions only while nothing they depend on has changed: a role
// lowered through the registry binds the very next message, not the next recheck.
func TestWSDecisionsFollowChangesAtOnce(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	c := f.connected(t, f.user("user_admin"))
	for range 3 { // decided, then from the socket's cache
		if res := c.call("config.set", map[string]any{}); res["ok"] != true {
			t.Fatalf("admin config.set: %v", res)
		}
	}
	setRole := func(role string) {
		if _, err := f.reg.Update(t.Context(), "gwa", func(g *registry.Gateway) error { g.Members["user_admin"] = role; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	setRole("viewer")
	if res := c.call("config.set", map[string]any{}); res["ok"] != false || !strings.Contains(mustJSON(res["error"]), "role_forbids") {
		t.Fatalf("config.set right after the role became viewer: %v", res)
	}
	if res := c.call("sessions.list", map[string]any{}); res["ok"] != true {
		t.Fatalf("viewer sessions.list: %v", res)
	}
	setRole("admin")
	if res := c.call("config.set", map[string]any{}); res["ok"] != true {
		t.Fatalf("config.set after the role came back: %v", res)
	}
	if got := strings.Count(strings.Join(f.up.ws.methods(), ","), "config.set"); got != 4 {
		t.Fatalf("gateway got config.set %d times, want 4", got)
	}

	// Any change to the policy data, not only to this gateway's record, is decided afresh.
	misses := func() float64 {
		return testutil.ToFloat64(mustCounter(t, f.metrics, "moltgate_ws_decision_cache_total", "miss"))
	}
	c.call("config.set", map[string]any{})
	before := misses()
	if res := c.call("config.set", map[string]any{}); res["ok"] != true || misses() != before {
		t.Fatalf("repeat within the cache's life: %v, misses %v -> %v, want a hit", res, before, misses())
	}
	if err := f.engine.SetPlatformAdmins(t.Context(), []string{"user_root"}); err != nil {
		t.Fatal(err)
	}
	if res := c.call("config.set", map[string]any{}); res["ok"] != true || misses() != before+1 {
		t.Fatalf("after a data change: %v, misses %v -> %v, want a miss", res, before, misses())
	}
}

// A client that repeats a refused call (as the Control UI does while its settings page is
// open without the right to read the configuration) gets every call answered, but not an
// audit event each: the first is recorded, the rest in summaries (details.repeats) that
// together account for every refusal, the last when the socket ends.
func TestWSRepeatedRefusalsAreSummarised(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	c := f.connected(t, f.user("user_operator"))
	const calls = 30
	for range calls {
		if res := c.call("config.get", map[string]any{}); res["ok"] != false {
			t.Fatalf("config.get as operator: %v, want FORBIDDEN", res)
		}
	}
	if got := strings.Count(strings.Join(f.up.ws.methods(), ","), "config.get"); got != 0 {
		t.Fatalf("the gateway got config.get %d times", got)
	}
	c.c.Close(websocket.StatusNormalClosure, "")
	var events, refusals int
	testenv.WaitUntil(t, "every refusal on record", 10*time.Second, func() bool {
		events, refusals = 0, 0
		for _, e := range f.events(t) {
			if e.Details["method"] != "config.get" || e.Reason != "role_forbids" {
				continue
			}
			events++
			n := 1
			if r, ok := e.Details["repeats"]; ok {
				n, _ = strconv.Atoi(r)
			}
			refusals += n
		}
		return refusals >= calls
	})
	if refusals != calls || events >= calls || events < 1 {
		t.Fatalf("%d refusals on record in %d events, want %d in fewer events", refusals, events, calls)
	}
}

// A denied message whose audit event cannot be written ends the socket (1011) instead of
// being refused off the record.
func TestWSDeniedMessageThatCannotBeAuditedClosesTheSocket(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	c := f.connected(t, f.user("user_operator"))
	if res := c.call("config.set", map[string]any{}); res["ok"] != false {
		t.Fatalf("config.set as operator: %v, want FORBIDDEN", res)
	}
	f.audit.Close()
	c.send(`{"type":"req","id":"x2","method":"config.set","params":{}}`)
	if code, reason := c.closed(); code != websocket.StatusInternalError || reason != "audit unavailable" {
		t.Fatalf("closed with %d %q, want 1011 audit unavailable", code, reason)
	}
	if n := f.closesBy(t, "audit_unavailable"); n != 1 {
		t.Fatalf("closes by audit_unavailable: %v, want 1", n)
	}
}

// The gateway's tick events are traffic: a socket the gateway keeps ticking on outlives the
// idle timeout, and is closed by it once the ticks stop.
func TestWSGatewayTicksKeepSocketAlive(t *testing.T) {
	cfg := testWSConfig
	cfg.IdleTimeout = time.Second
	cfg.PingInterval = time.Hour
	f := buildFixture(t, registry.AuthToken, &cfg)
	const ticks = 30 // three idle timeouts' worth, ten per timeout
	f.up.ws.mu.Lock()
	f.up.ws.ticks, f.up.ws.tickEvery = ticks, 100*time.Millisecond
	f.up.ws.mu.Unlock()
	c := f.connected(t, tokA)
	for i := range ticks {
		if m := c.read(); m["event"] != "tick" {
			t.Fatalf("message %d: %v, want tick %d (the socket must stay open while the gateway ticks)", i, m, i)
		}
	}
	if code, reason := c.closed(); code != websocket.StatusGoingAway || reason != "idle timeout" {
		t.Fatalf("after the ticks stopped: %d %q, want 1001 idle timeout", code, reason)
	}
}
