package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

const (
	testToken  = "testenv-token-3f9c2a"
	alice      = "alice@example.com"
	bob        = "bob@example.com"
	clientAddr = "203.0.113.5" // a non-loopback client, as a proxy would forward
)

func tokenGateway(t *testing.T) *OpenClawGateway {
	return SharedOpenClaw(t, OpenClawOptions{Token: testToken})
}

func trustedGateway(t *testing.T) *OpenClawGateway {
	return SharedOpenClaw(t, OpenClawOptions{
		Mode:              ModeTrustedProxy,
		TrustedProxyUsers: []string{alice},
		IdentityScopes:    map[string][]string{alice: {"operator.read", "operator.write", "operator.admin"}},
	})
}

type httpCase struct {
	name       string
	method     string
	path       string
	header     map[string]string
	body       string
	wantStatus int
	wantBody   string // substring
}

// runHTTPCases sends each case through a fresh tap in front of upstream and
// checks the answer and that the tap recorded the request unchanged.
func runHTTPCases(t *testing.T, upstream string, cases []httpCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tap := Tap(t, upstream)
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			req, err := http.NewRequestWithContext(t.Context(), tc.method, tap.URL+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			if tc.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s %s %v -> %d %s", tc.method, tc.path, tc.header, resp.StatusCode, trimFrame(got))
			if resp.StatusCode != tc.wantStatus {
				t.Errorf("status: got %d, want %d (body %s)", resp.StatusCode, tc.wantStatus, got)
			}
			if !strings.Contains(string(got), tc.wantBody) {
				t.Errorf("body: got %s, want it to contain %s", got, tc.wantBody)
			}

			rec := tap.Last()
			if rec.Method != tc.method || rec.Path != tc.path {
				t.Errorf("recorded %s %s, want %s %s", rec.Method, rec.Path, tc.method, tc.path)
			}
			for k, v := range tc.header {
				if g := rec.Header.Get(k); g != v {
					t.Errorf("recorded header %s: got %q, want %q", k, g, v)
				}
			}
			if string(rec.Body) != tc.body {
				t.Errorf("recorded body: got %q, want %q", rec.Body, tc.body)
			}
			if rec.Status != tc.wantStatus {
				t.Errorf("recorded status: got %d, want %d", rec.Status, tc.wantStatus)
			}
		})
	}
}

func TestOpenClawTokenModeHTTP(t *testing.T) {
	t.Parallel()
	g := tokenGateway(t)
	if g.Token != testToken || g.Mode != ModeToken || g.URL != "http://127.0.0.1:"+strconv.Itoa(g.Port) {
		t.Fatalf("gateway %+v: want token mode on its port with the given token", g)
	}
	bearer := "Bearer " + testToken
	const sessionsList = `{"tool":"sessions_list","args":{}}`
	runHTTPCases(t, g.URL, []httpCase{
		{"readyz", "GET", "/readyz", nil, "", 200, `"ready":true`},
		{"healthz", "GET", "/healthz", nil, "", 200, `{"ok":true,"status":"live"}`},
		{"control UI shell needs no auth", "GET", "/", nil, "", 200, "<!doctype html>"},
		{"config without token", "GET", "/control-ui-config.json", nil, "", 401,
			`{"error":{"message":"Unauthorized","type":"unauthorized"}}`},
		{"config with wrong token", "GET", "/control-ui-config.json", map[string]string{"Authorization": "Bearer wrong"}, "", 401, `"unauthorized"`},
		{"config with session cookie only", "GET", "/control-ui-config.json", map[string]string{"Cookie": "__session=abc"}, "", 401, `"unauthorized"`},
		{"config with token", "GET", "/control-ui-config.json", map[string]string{"Authorization": bearer}, "", 200, `"serverVersion":"2026.9.6"`},
		{"tools invoke with token", "POST", "/tools/invoke", map[string]string{"Authorization": bearer}, sessionsList, 200,
			`{"ok":true,"result":{"content":[{"type":"text"`},
		{"tools invoke without token", "POST", "/tools/invoke", nil, sessionsList, 401, `"unauthorized"`},
		// The tap's loopback address is not in trustedProxies: any forwarded
		// header is refused before auth, except on health probes.
		{"forwarded-for from untrusted peer", "GET", "/control-ui-config.json",
			map[string]string{"Authorization": bearer, "X-Forwarded-For": clientAddr}, "", 403, `"type":"proxy_attribution_required"`},
		{"forwarded-proto from untrusted peer", "GET", "/control-ui-config.json",
			map[string]string{"Authorization": bearer, "X-Forwarded-Proto": "https"}, "", 403, `"type":"proxy_attribution_required"`},
		{"healthz ignores forwarded headers", "GET", "/healthz", map[string]string{"X-Forwarded-For": clientAddr}, "", 200, `"status":"live"`},
	})
}

func TestOpenClawTokenModeWebSocket(t *testing.T) {
	t.Parallel()
	g := tokenGateway(t)
	tap := Tap(t, g.URL)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	wsURL := "ws" + strings.TrimPrefix(tap.URL, "http") + "/"

	c, resp, err := DialOpenClaw(ctx, wsURL, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Conn.CloseNow()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade status: got %d, want 101", resp.StatusCode)
	}
	t.Logf("challenge: %s", c.Challenge.Raw)
	var challenge struct {
		Nonce string `json:"nonce"`
		TS    int64  `json:"ts"`
	}
	if err := json.Unmarshal(c.Challenge.Payload, &challenge); err != nil || challenge.Nonce == "" || challenge.TS <= 0 {
		t.Fatalf("challenge payload %s: want a nonce and a ts (%v)", c.Challenge.Payload, err)
	}

	hello, err := c.Connect(ctx, map[string]any{"token": testToken})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Logf("connect -> %s", trimFrame(hello.Raw))
	if !hello.OK {
		t.Fatalf("connect: got %s, want ok", hello.Raw)
	}
	var hp struct {
		Type     string `json:"type"`
		Protocol int    `json:"protocol"`
		Server   struct {
			Version string `json:"version"`
		} `json:"server"`
		Features struct {
			Methods []string `json:"methods"`
		} `json:"features"`
		Auth struct {
			Method string   `json:"method"`
			Role   string   `json:"role"`
			Scopes []string `json:"scopes"`
		} `json:"auth"`
	}
	if err := json.Unmarshal(hello.Payload, &hp); err != nil {
		t.Fatal(err)
	}
	t.Logf("hello-ok: protocol %d, server %s, %d methods, auth %+v", hp.Protocol, hp.Server.Version, len(hp.Features.Methods), hp.Auth)
	if hp.Type != "hello-ok" || hp.Auth.Method != "token" || !slices.Contains(hp.Auth.Scopes, "operator.admin") ||
		!slices.Contains(hp.Features.Methods, "sessions.list") {
		t.Fatalf("hello-ok payload: got %+v, want type hello-ok, token auth with operator.admin, sessions.list among methods", hp)
	}

	res, err := c.Request(ctx, "sessions.list", map[string]any{})
	if err != nil {
		t.Fatalf("sessions.list: %v", err)
	}
	t.Logf("sessions.list -> %s", trimFrame(res.Raw))
	var sl struct {
		Count    *int              `json:"count"`
		Sessions []json.RawMessage `json:"sessions"`
	}
	if !res.OK || json.Unmarshal(res.Payload, &sl) != nil || sl.Count == nil {
		t.Fatalf("sessions.list: got %s, want ok with a count", res.Raw)
	}
	if err := c.Close(); err != nil {
		t.Logf("close: %v", err)
	}

	rec, ok := tap.WaitFor(func(r Recorded) bool { return r.Upgrade == "websocket" && r.Status == 101 }, 5*time.Second)
	if !ok {
		t.Fatalf("tap recorded no upgraded WebSocket: %+v", tap.Requests())
	}
	if rec.Header.Get("Authorization") != "" || rec.Header.Get("Origin") != "" {
		t.Fatalf("recorded upgrade headers %v: want no Authorization or Origin", rec.Header)
	}

	t.Run("wrong token", func(t *testing.T) {
		c, _, err := DialOpenClaw(ctx, wsURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Conn.CloseNow()
		res, err := c.Connect(ctx, map[string]any{"token": "wrong"})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("connect -> %s", res.Raw)
		if res.OK || res.Error == nil || res.Error.Code != "INVALID_REQUEST" || !strings.Contains(string(res.Error.Details), `"AUTH_TOKEN_MISMATCH"`) {
			t.Fatalf("connect with wrong token: got %s, want INVALID_REQUEST AUTH_TOKEN_MISMATCH", res.Raw)
		}
		_, _, err = c.Conn.Read(ctx)
		if s := websocket.CloseStatus(err); s != websocket.StatusPolicyViolation {
			t.Fatalf("after refusal: got %v, want close 1008", err)
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		c, _, err := DialOpenClaw(ctx, wsURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Conn.CloseNow()
		res, err := c.Connect(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("connect -> %s", res.Raw)
		if res.OK || res.Error == nil || res.Error.Code != "NOT_PAIRED" {
			t.Fatalf("connect without auth: got %s, want NOT_PAIRED", res.Raw)
		}
	})
	t.Run("forwarded header refused at upgrade", func(t *testing.T) {
		_, resp, err := DialOpenClaw(ctx, wsURL, http.Header{"X-Forwarded-For": {clientAddr}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("dial with X-Forwarded-For: got %v (%v), want a 403", resp, err)
		}
	})
}

func TestOpenClawTrustedProxyHTTP(t *testing.T) {
	t.Parallel()
	g := trustedGateway(t)
	if g.Token != "" || g.Mode != ModeTrustedProxy {
		t.Fatalf("gateway %+v: want trusted-proxy mode without token", g)
	}
	ok := map[string]string{"X-Forwarded-User": alice, "X-Forwarded-Proto": "https", "X-Forwarded-For": clientAddr}
	with := func(kv ...string) map[string]string {
		h := map[string]string{}
		for k, v := range ok {
			h[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(h, kv[i])
			} else {
				h[kv[i]] = kv[i+1]
			}
		}
		return h
	}
	const sessionsList = `{"tool":"sessions_list","args":{}}`
	const unauthorized = `{"error":{"message":"Unauthorized","type":"unauthorized"}}`
	const attribution = `"type":"proxy_attribution_required"`
	runHTTPCases(t, g.URL, []httpCase{
		{"allowed user", "GET", "/control-ui-config.json", ok, "", 200, `"serverVersion":"2026.9.6"`},
		{"allowed user behind two hops", "GET", "/control-ui-config.json", with("X-Forwarded-For", clientAddr+", 127.0.0.1"), "", 200, `"serverVersion"`},
		{"no headers", "GET", "/control-ui-config.json", nil, "", 401, unauthorized},
		{"user not allowed", "GET", "/control-ui-config.json", with("X-Forwarded-User", bob), "", 401, unauthorized},
		{"no user header", "GET", "/control-ui-config.json", with("X-Forwarded-User", ""), "", 401, unauthorized},
		{"required proto header missing", "GET", "/control-ui-config.json", with("X-Forwarded-Proto", ""), "", 401, unauthorized},
		{"browser origin not allowed", "GET", "/control-ui-config.json", with("Origin", "https://evil.example"), "", 401, unauthorized},
		{"no client address", "GET", "/control-ui-config.json", with("X-Forwarded-For", ""), "", 403, attribution},
		{"loopback client address", "GET", "/control-ui-config.json", with("X-Forwarded-For", "127.0.0.1"), "", 403, attribution},
		{"X-Real-IP instead of X-Forwarded-For", "GET", "/control-ui-config.json", with("X-Forwarded-For", "", "X-Real-IP", clientAddr), "", 403, attribution},
		{"Forwarded instead of X-Forwarded-For", "GET", "/control-ui-config.json", with("X-Forwarded-For", "", "Forwarded", "for="+clientAddr+";proto=https"), "", 403, attribution},
		{"a bearer token does not replace the proxy", "GET", "/control-ui-config.json", map[string]string{"Authorization": "Bearer anything"}, "", 401, unauthorized},
		{"tools invoke allowed user", "POST", "/tools/invoke", ok, sessionsList, 200, `{"ok":true,"result":{"content":[{"type":"text"`},
		{"tools invoke capped to read", "POST", "/tools/invoke", with("X-Openclaw-Scopes", "operator.read"), sessionsList, 403,
			`{"ok":false,"error":{"type":"forbidden","message":"missing scope: operator.write","details":{"code":"MISSING_SCOPE"`},
		{"tools invoke user not allowed", "POST", "/tools/invoke", with("X-Forwarded-User", bob), sessionsList, 401, unauthorized},
		{"readyz without headers", "GET", "/readyz", nil, "", 200, `"ready":true`},
	})
}

func TestOpenClawTrustedProxyWebSocket(t *testing.T) {
	t.Parallel()
	g := trustedGateway(t)
	tap := Tap(t, g.URL)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	wsURL := "ws" + strings.TrimPrefix(tap.URL, "http") + "/"
	header := func(user, xff string) http.Header {
		h := http.Header{"X-Forwarded-Proto": {"https"}}
		if user != "" {
			h.Set("X-Forwarded-User", user)
		}
		if xff != "" {
			h.Set("X-Forwarded-For", xff)
		}
		return h
	}

	t.Run("allowed user", func(t *testing.T) {
		c, _, err := DialOpenClaw(ctx, wsURL, header(alice, clientAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Conn.CloseNow()
		hello, err := c.Connect(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var hp struct {
			Auth json.RawMessage `json:"auth"`
		}
		_ = json.Unmarshal(hello.Payload, &hp)
		t.Logf("connect -> ok=%v auth=%s", hello.OK, hp.Auth)
		if !hello.OK || !strings.Contains(string(hp.Auth), `"method":"trusted-proxy"`) {
			t.Fatalf("connect: got %s, want hello-ok by trusted-proxy", trimFrame(hello.Raw))
		}
		res, err := c.Request(ctx, "sessions.list", map[string]any{})
		if err != nil || !res.OK {
			t.Fatalf("sessions.list: got %s (%v), want ok", trimFrame(res.Raw), err)
		}
	})
	for _, tc := range []struct {
		name   string
		header http.Header
	}{
		{"user not allowed", header(bob, clientAddr)},
		{"no user", header("", clientAddr)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := DialOpenClaw(ctx, wsURL, tc.header)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Conn.CloseNow()
			res, err := c.Connect(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("connect -> %s", res.Raw)
			if res.OK || res.Error == nil || res.Error.Code != "NOT_PAIRED" {
				t.Fatalf("connect: got %s, want NOT_PAIRED (device identity required)", res.Raw)
			}
		})
	}
	t.Run("no client address", func(t *testing.T) {
		_, resp, err := DialOpenClaw(ctx, wsURL, header(alice, ""))
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("dial: got %v (%v), want a 403", resp, err)
		}
	})
}

// TestOpenClawStopsProcessGroup starts a gateway of its own and checks that
// the test's cleanup leaves no process of its group and frees its port.
func TestOpenClawStopsProcessGroup(t *testing.T) {
	t.Parallel()
	var pgid, port int
	t.Run("gateway", func(t *testing.T) {
		g := OpenClaw(t, OpenClawOptions{Token: "own-token"})
		pgid, port = g.proc.cmd.Process.Pid, g.Port
		resp, err := http.Get(g.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("/readyz: got %d, want 200", resp.StatusCode)
		}
		if err := syscall.Kill(-pgid, 0); err != nil {
			t.Fatalf("process group %d while running: %v", pgid, err)
		}
	})
	if pgid == 0 {
		t.Fatal("gateway did not start")
	}
	if err := syscall.Kill(-pgid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("process group %d after cleanup: got %v, want ESRCH", pgid, err)
	}
	if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
		c.Close()
		t.Fatalf("port %d still accepts connections after cleanup", port)
	}
}

func trimFrame(b []byte) string {
	const n = 300
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
