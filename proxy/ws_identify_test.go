package proxy_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
	"github.com/moltgate/moltgate/registry"
)

// Issue 10, "Nothing unauthenticated reaches a gateway": an upgrade without a credential is
// answered by moltgate until its connect request is allowed, and only then is the gateway
// dialled. These tests count the upgrades the stand-in gateway received.

func (g *wsGateway) upgradeCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.upgrades)
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// anonymous upgrades without a credential and returns the socket with the challenge moltgate
// sent it.
func (f *fixture) anonymous(t *testing.T) (*client, map[string]any) {
	t.Helper()
	c, resp, err := f.dial(t, "gwa.gw.localhost", nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("anonymous upgrade: %v (status %d)", err, status)
	}
	m := c.read()
	if m["type"] != "event" || m["event"] != "connect.challenge" {
		t.Fatalf("first frame %v, want connect.challenge", m)
	}
	return c, m["payload"].(map[string]any)
}

// An anonymous upgrade gets a challenge of the gateway's shape from moltgate, and the gateway
// sees no connection; an upgrade from outside the allowlist gets no socket at all, with a
// credential or without.
func TestWSAnonymousUpgradeReachesNoGateway(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	c, challenge := f.anonymous(t)
	if n, _ := challenge["nonce"].(string); !uuidV4.MatchString(n) {
		t.Errorf("challenge nonce %v, want a random UUID as the gateway sends", challenge["nonce"])
	}
	if ts, _ := challenge["ts"].(float64); time.Since(time.UnixMilli(int64(ts))).Abs() > time.Minute {
		t.Errorf("challenge ts %v, want now in milliseconds", challenge["ts"])
	}
	if caps, ok := challenge["capabilities"].([]any); !ok || len(caps) != 0 {
		t.Errorf("challenge capabilities %v, want an empty list", challenge["capabilities"])
	}
	if _, again := f.anonymous(t); again["nonce"] == challenge["nonce"] {
		t.Errorf("two sockets got the same nonce %v", again["nonce"])
	}
	c.c.Close(websocket.StatusNormalClosure, "")
	// A socket with a credential is dialled at once: the gateway is there to be reached.
	f.connected(t, tokA)
	if n := f.up.ws.upgradeCount(); n != 1 {
		t.Fatalf("gateway got %d upgrades, want 1: only the identified socket's", n)
	}

	if _, err := f.reg.Update(t.Context(), "gwa", func(g *registry.Gateway) error { g.Allowlist = []string{"192.0.2.0/24"}; return nil }); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		header http.Header
	}{
		{"anonymous", nil},
		{"gateway token", bearerHeader(tokA)},
		{"owner", bearerHeader(f.user("user_owner"))},
	} {
		if _, resp, err := f.dial(t, "gwa.gw.localhost", tt.header); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s upgrade from outside the allowlist: %v, want 403", tt.name, err)
		}
		if ev, _ := f.lastEvent(t); ev.Reason != "ip_not_allowed" || ev.Type != audit.TypePolicyDeny || ev.ClientIP != "127.0.0.1" {
			t.Errorf("%s: audited %+v, want policy.deny ip_not_allowed from 127.0.0.1", tt.name, ev)
		}
	}
	if n := f.up.ws.upgradeCount(); n != 1 {
		t.Fatalf("gateway got %d upgrades, want still 1", n)
	}
}

// A client that identifies in its connect request is answered by moltgate until it is
// decided: refused, it never causes a dial; allowed, the gateway is dialled then, with the
// role's scopes on the upgrade, and the gateway's hello-ok answers the connect.
func TestWSIdentifyOnConnectDialsOnlyAfterAllow(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	for _, tt := range []struct{ name, token, code string }{
		{"no credential", "", "UNAUTHORIZED"},
		{"forged session", f.clerk.ForgeAlgNone(clerktest.Claims{Subject: "user_owner"}), "UNAUTHORIZED"},
		{"unknown gateway token", strings.Repeat("c", 64), "UNAUTHORIZED"},
		{"stranger", f.user("user_stranger"), "FORBIDDEN"},
		{"other tenant's token", tokB, "FORBIDDEN"},
	} {
		c, _ := f.anonymous(t)
		res := c.call("connect", map[string]any{"auth": map[string]any{"token": tt.token}})
		if e, _ := res["error"].(map[string]any); res["ok"] != false || e["code"] != tt.code {
			t.Errorf("%s: connect answered %v, want %s", tt.name, res, tt.code)
		}
		if code, _ := c.closed(); code != websocket.StatusPolicyViolation {
			t.Errorf("%s: closed with %d, want 1008", tt.name, code)
		}
	}
	if n := f.up.ws.upgradeCount(); n != 0 {
		t.Fatalf("refused connects made %d gateway upgrades, want none", n)
	}

	c, _ := f.anonymous(t)
	if n := f.up.ws.upgradeCount(); n != 0 {
		t.Fatalf("gateway dialled before connect: %d upgrades", n)
	}
	res := c.call("connect", map[string]any{"auth": map[string]any{"token": f.user("user_viewer")},
		"scopes": []string{"operator.read", "operator.admin"}})
	if p, _ := res["payload"].(map[string]any); res["ok"] != true || p["type"] != "hello-ok" {
		t.Fatalf("viewer's connect: %v, want the gateway's hello-ok", res)
	}
	if n := f.up.ws.upgradeCount(); n != 1 {
		t.Fatalf("gateway got %d upgrades after the allowed connect, want 1", n)
	}
	// Dialled after the decision, the upgrade carries the role's cap too.
	f.up.ws.mu.Lock()
	h := f.up.ws.upgrades[0]
	f.up.ws.mu.Unlock()
	if got := h.Get("X-Openclaw-Scopes"); got != "operator.read" {
		t.Errorf("upgrade X-Openclaw-Scopes %q, want the viewer's operator.read", got)
	}
	params := f.up.ws.frame(0)["params"].(map[string]any)
	if auth := params["auth"].(map[string]any); auth["token"] != tokA {
		t.Errorf("connect reached the gateway with auth %v, want the gateway token", auth)
	}
	if got := mustJSON(params["scopes"]); got != `["operator.read"]` {
		t.Errorf("connect reached the gateway asking %s, want the viewer's scopes", got)
	}
	if res := c.call("status", nil); res["ok"] != true {
		t.Fatalf("status after connect: %v", res)
	}
	if got := strings.Join(f.up.ws.methods(), ","); got != "connect,status" {
		t.Fatalf("gateway received %s, want connect,status", got)
	}
}

// A socket not identified within websocket.identify_timeout is closed (1008) and audited,
// without a gateway ever being dialled; one identified in time lives on past the deadline.
func TestWSIdentifyDeadline(t *testing.T) {
	cfg := testWSConfig
	cfg.IdentifyTimeout = 300 * time.Millisecond
	f := buildFixture(t, registry.AuthToken, &cfg)
	c, _ := f.anonymous(t)
	start := time.Now()
	if code, reason := c.closed(); code != websocket.StatusPolicyViolation || reason != "identify timeout" {
		t.Fatalf("silent unidentified socket: got %d %q, want 1008 identify timeout", code, reason)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("closed after %v, want about the identify timeout", d)
	}
	if n := f.closesBy(t, "identify_timeout"); n != 1 {
		t.Errorf("closes by identify_timeout: %v, want 1", n)
	}
	if ev, _ := f.lastEvent(t); ev.Type != audit.TypePolicyDeny || ev.Reason != "identify_timeout" || ev.Gateway != "gwa" || ev.ClientIP != "127.0.0.1" {
		t.Errorf("audited %+v, want policy.deny identify_timeout on gwa from 127.0.0.1", ev)
	}

	ok, _ := f.anonymous(t)
	if res := ok.call("connect", map[string]any{"auth": map[string]any{"token": tokA}}); res["ok"] != true {
		t.Fatalf("connect: %v", res)
	}
	time.Sleep(2 * cfg.IdentifyTimeout) // past the deadline: it must no longer apply
	if res := ok.call("status", nil); res["ok"] != true {
		t.Fatalf("identified socket after the deadline: %v", res)
	}
	if n := f.up.ws.upgradeCount(); n != 1 {
		t.Fatalf("gateway got %d upgrades, want 1: only the identified socket's", n)
	}
}

// Once identified, a socket counts against its subject's max_conns_per_subject, and no
// longer against its address: sockets opened with a credential and sockets identified on
// connect share one limit per user (before, one user got 3 + 3 here).
func TestWSIdentifiedSocketCountsAsItsSubject(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken) // 3 per subject
	identify := func(tok string) (*client, map[string]any) {
		c, _ := f.anonymous(t)
		return c, c.call("connect", map[string]any{"auth": map[string]any{"token": tok}})
	}
	// Three sockets from one address, identified as three subjects, leave the address free.
	for _, tok := range []string{tokA, f.user("user_viewer"), f.user("user_operator")} {
		if _, res := identify(tok); res["ok"] != true {
			t.Fatalf("connect: %v", res)
		}
	}
	spare, _ := f.anonymous(t) // a fourth unidentified socket from the same address
	spare.c.Close(websocket.StatusNormalClosure, "")

	// The owner holds three sockets opened with a credential: a fourth identified on
	// connect is refused, and reaches no gateway.
	for range testWSConfig.MaxConnsPerSubject {
		f.connected(t, f.user("user_owner"))
	}
	before := f.up.ws.upgradeCount()
	c, res := identify(f.user("user_owner"))
	if e, _ := res["error"].(map[string]any); res["ok"] != false || e["code"] != "UNAVAILABLE" || !strings.Contains(mustJSON(e), "too_many_connections") {
		t.Fatalf("owner's fourth socket: %v, want UNAVAILABLE too_many_connections", res)
	}
	if code, reason := c.closed(); code != websocket.StatusPolicyViolation || reason != "too_many_connections" {
		t.Fatalf("owner's fourth socket closed with %d %q, want 1008 too_many_connections", code, reason)
	}
	if n := f.up.ws.upgradeCount(); n != before {
		t.Fatalf("the refused socket was dialled: %d upgrades, want %d", n, before)
	}
	if ev, _ := f.lastEvent(t); ev.Reason != "too_many_connections" || ev.Actor.ID != "user_owner" {
		t.Errorf("audited %+v, want too_many_connections of user_owner", ev)
	}

	// The other way round: three sockets identified on connect fill the admin's limit for
	// sockets opened with a credential.
	var admins []*client
	for range testWSConfig.MaxConnsPerSubject {
		c, res := identify(f.user("user_admin"))
		if res["ok"] != true {
			t.Fatalf("admin's connect: %v", res)
		}
		admins = append(admins, c)
	}
	if _, resp, err := f.dial(t, "gwa.gw.localhost", bearerHeader(f.user("user_admin"))); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("admin's fourth socket: %v, want 429", err)
	}
	// Closing one frees the subject's slot.
	admins[0].c.Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, resp, err := f.dial(t, "gwa.gw.localhost", bearerHeader(f.user("user_admin")))
		if err == nil {
			break
		}
		if resp == nil || resp.StatusCode != http.StatusTooManyRequests || time.Now().After(deadline) {
			t.Fatalf("admin's socket after one closed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The first frame of an unidentified socket is read by moltgate, and a malformed, oversized
// or replayed one closes the socket without a gateway ever being dialled.
func TestWSUnidentifiedFirstFrames(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	device := func(nonce any) map[string]any {
		return map[string]any{"id": "dev-1", "publicKey": "pk", "signature": "sig", "signedAt": time.Now().UnixMilli(), "nonce": nonce}
	}
	connect := func(params map[string]any) string {
		params["auth"] = map[string]any{"token": tokA}
		return `{"type":"req","id":"c1","method":"connect","params":` + mustJSON(params) + `}`
	}
	for _, tt := range []struct {
		name   string
		frame  func(nonce string) string
		binary bool
		status websocket.StatusCode
		code   string // the error answering connect, if any
	}{
		{"not json", func(string) string { return `hello` }, false, websocket.StatusPolicyViolation, ""},
		{"not a request", func(string) string { return `{"type":"event","event":"connect.challenge"}` }, false, websocket.StatusPolicyViolation, ""},
		{"binary", func(string) string { return `{}` }, true, websocket.StatusPolicyViolation, ""},
		{"not utf-8", func(string) string {
			return "{\"type\":\"req\",\"id\":\"1\",\"method\":\"connect\",\"params\":{\"x\":\"\xff\"}}"
		}, false, websocket.StatusInvalidFramePayloadData, ""},
		{"oversized", func(string) string { return connect(map[string]any{"x": strings.Repeat("a", 8192)}) }, false, websocket.StatusMessageTooBig, ""},
		{"not connect", func(string) string { return `{"type":"req","id":"1","method":"status","params":{}}` }, false, websocket.StatusPolicyViolation, ""},
		{"method spelled twice", func(string) string { return `{"type":"req","id":"1","method":"status","Method":"connect","params":{}}` }, false, websocket.StatusPolicyViolation, ""},
		{"device proof for another challenge", func(string) string {
			return connect(map[string]any{"device": device("0b7a3c2e-1f4d-4e5a-9b6c-7d8e9f0a1b2c")})
		}, false, websocket.StatusPolicyViolation, "INVALID_REQUEST"},
		{"device proof without nonce", func(string) string { return connect(map[string]any{"device": device(nil)}) }, false, websocket.StatusPolicyViolation, "INVALID_REQUEST"},
		{"device proof not an object", func(string) string { return connect(map[string]any{"device": "x"}) }, false, websocket.StatusPolicyViolation, "INVALID_REQUEST"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, challenge := f.anonymous(t)
			typ := websocket.MessageText
			if tt.binary {
				typ = websocket.MessageBinary
			}
			if err := c.c.Write(t.Context(), typ, []byte(tt.frame(challenge["nonce"].(string)))); err != nil {
				t.Fatal(err)
			}
			if tt.code != "" {
				if m := c.read(); m["ok"] != false || m["error"].(map[string]any)["code"] != tt.code {
					t.Fatalf("connect answered %v, want %s", m, tt.code)
				}
			}
			if code, reason := c.closed(); code != tt.status {
				t.Fatalf("closed with %d %q, want %d", code, reason, tt.status)
			}
			if n := f.up.ws.upgradeCount(); n != 0 {
				t.Fatalf("gateway got %d upgrades, want none", n)
			}
		})
	}

	// A device proof of this socket's own challenge passes (and is dropped: it signs the
	// credential moltgate replaces); the same connect sent again on the socket closes it.
	c, challenge := f.anonymous(t)
	first := connect(map[string]any{"device": device(challenge["nonce"])})
	c.send(first)
	if m := c.read(); m["ok"] != true {
		t.Fatalf("connect with this socket's nonce: %v", m)
	}
	if _, ok := f.up.ws.frame(0)["params"].(map[string]any)["device"]; ok {
		t.Error("the client's device proof reached the gateway")
	}
	c.send(first)
	if code, reason := c.closed(); code != websocket.StatusPolicyViolation || reason != "connect sent twice" {
		t.Fatalf("replayed connect: closed with %d %q, want 1008 connect sent twice", code, reason)
	}
	if got := strings.Join(f.up.ws.methods(), ","); got != "connect" {
		t.Fatalf("gateway received %s, want one connect", got)
	}
}

// A gateway that cannot be reached once the connect is allowed answers that connect with
// UNAVAILABLE and closes the socket (1011).
func TestWSGatewayDownAfterIdentify(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	f.up.Close()
	c, _ := f.anonymous(t)
	res := c.call("connect", map[string]any{"auth": map[string]any{"token": tokA}})
	if e, _ := res["error"].(map[string]any); res["ok"] != false || e["code"] != "UNAVAILABLE" {
		t.Fatalf("connect with the gateway down: %v, want UNAVAILABLE", res)
	}
	if code, _ := c.closed(); code != websocket.StatusInternalError {
		t.Fatalf("closed with %d, want 1011", code)
	}
	if n := f.closesBy(t, "upstream_unavailable"); n != 1 {
		t.Fatalf("closes by upstream_unavailable: %v, want 1", n)
	}
}
