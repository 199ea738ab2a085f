package proxy_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/registry"
)

func (g *wsGateway) upgrade(i int) http.Header {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.upgrades[i]
}

// The Control UI's socket (issue 10): a gateway's own public origin may open sockets to it
// with no configuration, the gateway gets an Origin it accepts for its Control UI in place of
// the browser's, and no other page's origin gets through.
func TestWSGatewayOwnOrigin(t *testing.T) {
	for _, mode := range []registry.AuthMode{registry.AuthToken, registry.AuthTrustedProxy} {
		t.Run(string(mode), func(t *testing.T) {
			f := newWSFixture(t, mode)
			f.up.ws.helloAuth = `{"method":"token","scopes":["operator.read"],"deviceToken":"dev-secret","issuedAtMs":1}`
			// The test server listens on loopback over plain HTTP: the gateway's pages are
			// at http://gwa.gw.localhost (the Host the client sends).
			own := "http://gwa.gw.localhost"
			c, resp, err := f.dial(t, "gwa.gw.localhost", http.Header{"Authorization": {"Bearer " + f.user("user_viewer")}, "Origin": {own}})
			if err != nil {
				t.Fatalf("upgrade from the gateway's own origin: %v (%v)", err, resp)
			}
			up := f.up.ws.upgrade(0)
			want := strings.TrimSuffix(f.up.URL, "/") // token mode: the gateway's upstream origin
			if mode == registry.AuthTrustedProxy {
				want = own // listed in the gateway's gateway.controlUi.allowedOrigins
			}
			if got := up.Get("Origin"); got != want {
				t.Errorf("the gateway got Origin %q, want %q", got, want)
			}
			if up.Get("Authorization") != "" || up.Get("Cookie") != "" {
				t.Errorf("the client's credentials reached the gateway: %v", up)
			}

			// The Control UI's connect: a device proof signed over no token.
			if m := c.read(); m["event"] != "connect.challenge" {
				t.Fatalf("first frame %v, want the challenge", m)
			}
			device := map[string]any{"id": "dev-1", "publicKey": "pk", "signature": "sig", "signedAt": 1, "nonce": "n1"}
			asked := []string{"operator.admin", "operator.read", "operator.write"}
			res := c.call("connect", map[string]any{"role": "operator", "scopes": asked, "device": device,
				"client": map[string]any{"id": "openclaw-control-ui", "mode": "webchat"}})
			if res["ok"] != true {
				t.Fatalf("connect: %v", res)
			}
			params := f.up.ws.frame(0)["params"].(map[string]any)
			auth, _ := params["auth"].(map[string]any)
			switch mode {
			case registry.AuthToken:
				// The proof goes on as signed; the gateway token rides in auth.password, which
				// it does not sign; the upgrade's X-Openclaw-Scopes caps the scopes instead.
				if params["device"] == nil || mustJSON(params["scopes"]) != mustJSON(asked) {
					t.Errorf("device %v scopes %v upstream, want both as the client signed them", params["device"], params["scopes"])
				}
				if len(auth) != 1 || auth["password"] != tokA {
					t.Errorf("auth upstream %v, want the gateway token as password only", auth)
				}
				if got := up.Get("X-Openclaw-Scopes"); got != "operator.read" {
					t.Errorf("upgrade X-Openclaw-Scopes %q, want a viewer's", got)
				}
				// The device token the gateway issued never reaches the browser.
				if a, _ := res["payload"].(map[string]any)["auth"].(map[string]any); a["deviceToken"] != nil || a["issuedAtMs"] != nil || a["method"] != "token" {
					t.Errorf("hello-ok auth reached the client as %v, want it without the device token", a)
				}
			case registry.AuthTrustedProxy:
				// Admitted device-less, on the identity headers; scopes capped as for any client.
				if params["device"] != nil || auth != nil || mustJSON(params["scopes"]) != `["operator.read"]` {
					t.Errorf("connect upstream %v, want no device, no auth and a viewer's scopes", params)
				}
			}
			if res := c.call("status", nil); res["ok"] != true {
				t.Fatalf("status after connect: %v", res)
			}
			c.c.Close(websocket.StatusNormalClosure, "")

			// A dashboard's socket still goes on without Origin, as before.
			d, _, err := f.dial(t, "gwa.gw.localhost", http.Header{"Authorization": {"Bearer " + f.user("user_viewer")}, "Origin": {"https://app.example.test"}})
			if err != nil {
				t.Fatalf("upgrade from the dashboard: %v", err)
			}
			if got := f.up.ws.upgrade(1).Get("Origin"); got != "" {
				t.Errorf("a dashboard's socket reached the gateway with Origin %q, want none", got)
			}
			d.c.Close(websocket.StatusNormalClosure, "")

			// Every other page is refused before anything is dialled.
			before := f.up.ws.upgradeCount()
			for _, origin := range [][]string{
				{"http://gwb.gw.localhost"}, // another gateway's Control UI
				{"https://gwa.gw.localhost"},
				{"http://gwa.gw.localhost:8080"},
				{"http://gwa.gw.localhost.evil.example"},
				{"http://evil.example@gwa.gw.localhost"},
				{"http://gwa.gw.localhost/"},
				{"null"},
				{own, "https://app.example.test"},
			} {
				h := http.Header{"Authorization": {"Bearer " + f.user("user_owner")}, "Origin": origin}
				_, resp, err := f.dial(t, "gwa.gw.localhost", h)
				if origin[0] == "http://gwa.gw.localhost/" { // the same origin, serialized with a slash
					if err != nil {
						t.Errorf("Origin %q: %v", origin, err)
					}
					before++
					continue
				}
				if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
					t.Errorf("Origin %q: got %v (%v), want 403", origin, err, resp)
					continue
				}
				if ev, _ := f.lastEvent(t); ev.Reason != "origin_not_allowed" || ev.Type != audit.TypePolicyDeny {
					t.Errorf("Origin %q: audit %s %s, want a policy deny origin_not_allowed", origin, ev.Type, ev.Reason)
				}
			}
			if n := f.up.ws.upgradeCount(); n != before {
				t.Errorf("refused origins reached the gateway: %d upgrades, want %d", n, before)
			}
		})
	}
}
