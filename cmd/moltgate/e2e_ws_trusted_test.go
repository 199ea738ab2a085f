package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
)

// allOperatorScopes is what the trusted-proxy gateway grants every user of
// TestWSTrustedProxyEndToEnd (gateway.auth.identityScopes): whatever a
// session ends up with below that is moltgate's cap, sent as X-Openclaw-Scopes.
var allOperatorScopes = []string{"operator.read", "operator.write", "operator.admin"}

// TestWSTrustedProxyEndToEnd: a Go client speaking the OpenClaw protocol
// through the built moltgate to a real OpenClaw gateway in trusted-proxy
// mode. The client's Clerk JWT is on the upgrade; moltgate names the user to
// the gateway (X-Forwarded-User), caps the scopes by role (X-Openclaw-Scopes),
// decides every request, and closes the socket of a member removed through
// the admin API.
//
// A device-less client authenticated by trusted-proxy headers gets no scopes
// of its own from the gateway (it clears unbound scopes for any device-less
// trusted-proxy connect): only gateway.auth.identityScopes gives it any, so the
// gateway here grants both users all operator scopes and moltgate's
// X-Openclaw-Scopes header is what caps the viewer. (Without identityScopes
// the owner's hello-ok grants [] and sessions.list fails with MISSING_SCOPE;
// that is also why this gateway is not the one TestHTTPEndToEnd shares.)
// Without X-Forwarded-User the gateway refuses connect (NOT_PAIRED, device
// identity required); without X-Openclaw-Scopes the viewer's hello-ok
// grants all three scopes: either fails this test.
func TestWSTrustedProxyEndToEnd(t *testing.T) {
	const owner, viewer = "user_tpws_owner", "user_tpws_viewer"
	gw := testenv.SharedOpenClaw(t, testenv.OpenClawOptions{Mode: testenv.ModeTrustedProxy,
		TrustedProxyUsers: []string{owner, viewer},
		IdentityScopes:    map[string][]string{owner: allOperatorScopes, viewer: allOperatorScopes}})
	tap := testenv.Tap(t, gw.URL)
	top := t // sockets live across subtests
	clerk := clerktest.New(t)
	mg := startMoltgate(t, `
listen: @LISTEN@
admin_listen: @ADMIN@
data_dir: @DATA@
admin_token: {file: @ADMINTOKEN@}
trusted_proxies: [127.0.0.2]
`+clerkConfig(t, clerk))
	mg.cli(t, "gateway", "add", "--id", "gwtpws", "--tenant", "tenant-tpws", "--owner", owner,
		"--upstream", tap.URL, "--auth-mode", "trusted-proxy")
	mg.cli(t, "gateway", "member", "add", "gwtpws", viewer, "viewer")

	// dial upgrades through moltgate from 127.0.0.2 (a trusted proxy in front of moltgate,
	// naming the client 203.0.113.x) with the user's Clerk JWT and extra headers, and returns
	// the socket after the gateway's connect.challenge, with the upgrade the gateway got.
	dial := func(t *testing.T, sub, clientIP string, extra ...string) (*testenv.OpenClawConn, testenv.Recorded) {
		t.Helper()
		ctx := ctxTimeout(t, 30*time.Second)
		tap.Reset()
		h := http.Header{}
		h.Set("Authorization", "Bearer "+clerk.Mint(clerktest.Claims{Subject: sub}))
		h.Set("X-Forwarded-For", clientIP)
		h.Set("X-Forwarded-Proto", "https")
		for i := 0; i+1 < len(extra); i += 2 {
			h.Set(extra[i], extra[i+1])
		}
		oc, resp, err := dialMoltgateFrom(ctx, mg, "127.0.0.2", "ws://gwtpws.gw.localhost/", h)
		if err != nil {
			status := 0
			if resp != nil {
				status = resp.StatusCode
			}
			t.Fatalf("upgrade as %s: status %d: %v", sub, status, err)
		}
		top.Cleanup(func() { oc.Conn.CloseNow() })
		rec, ok := tap.WaitFor(func(r testenv.Recorded) bool { return r.Upgrade == "websocket" && r.Status == 101 }, 10*time.Second)
		if !ok {
			t.Fatalf("the gateway saw no accepted upgrade for %s; tap has %d requests", sub, len(tap.Requests()))
		}
		return oc, rec
	}
	connect := func(t *testing.T, oc *testenv.OpenClawConn) helloOK {
		t.Helper()
		f, err := oc.Connect(ctxTimeout(t, 30*time.Second), nil)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		if !f.OK {
			t.Fatalf("connect refused: %v (%s)", f.Error, f.Raw)
		}
		var h helloOK
		if err := json.Unmarshal(f.Payload, &h); err != nil || h.Type != "hello-ok" {
			t.Fatalf("connect answered %.300s, want hello-ok (%v)", f.Raw, err)
		}
		return h
	}
	call := func(t *testing.T, oc *testenv.OpenClawConn, method string, params any) testenv.Frame {
		t.Helper()
		f, err := oc.Request(ctxTimeout(t, 30*time.Second), method, params)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		return f
	}
	mustOK := func(t *testing.T, f testenv.Frame, what string) {
		t.Helper()
		if !f.OK {
			t.Fatalf("%s: %v (%.300s)", what, f.Error, f.Raw)
		}
	}
	identityHeaders := func(t *testing.T, rec testenv.Recorded, user, clientIP, scopes string) {
		t.Helper()
		want := map[string]string{"X-Forwarded-User": user, "X-Forwarded-Proto": "https", "X-Forwarded-For": clientIP,
			"X-Openclaw-Scopes": scopes, "Authorization": "", "Cookie": ""}
		for k, v := range want {
			if got := rec.Header.Get(k); got != v {
				t.Errorf("gateway's upgrade had %s %q, want %q", k, got, v)
			}
		}
	}

	// chat.toolTitles answers {titles: {}, disabled: true} and changes nothing; the gateway
	// wants operator.write for it.
	toolTitles := map[string]any{"sessionKey": "main", "items": []map[string]string{{"id": "t1", "name": "read", "input": "{}"}}}

	var ownerConn *testenv.OpenClawConn
	t.Run("owner connects with all scopes and lists sessions", func(t *testing.T) {
		oc, rec := dial(t, owner, "203.0.113.20")
		identityHeaders(t, rec, owner, "203.0.113.20", strings.Join(allOperatorScopes, ","))
		h := connect(t, oc)
		if h.Auth.Method != "trusted-proxy" || h.Auth.Role != "operator" {
			t.Errorf("hello-ok auth %+v, want the trusted-proxy operator", h.Auth)
		}
		if !sameSet(h.Auth.Scopes, allOperatorScopes) {
			t.Errorf("gateway granted the owner %q, want %q", h.Auth.Scopes, allOperatorScopes)
		}
		if len(h.Features.Methods) < 100 {
			t.Errorf("hello-ok lists %d methods, want the gateway's full list", len(h.Features.Methods))
		}
		mustOK(t, call(t, oc, "sessions.list", map[string]any{}), "owner's sessions.list")
		if f := call(t, oc, "chat.toolTitles", toolTitles); !f.OK {
			t.Errorf("owner's chat.toolTitles: %.300s", f.Raw)
		}
		ownerConn = oc
	})
	if t.Failed() {
		t.FailNow()
	}

	var viewerConn *testenv.OpenClawConn
	t.Run("viewer reads, is refused writes, carries on", func(t *testing.T) {
		// The client's own identity and scope headers must not reach the gateway.
		oc, rec := dial(t, viewer, "203.0.113.21", "X-Forwarded-User", owner, "X-Openclaw-Scopes", "operator.admin")
		identityHeaders(t, rec, viewer, "203.0.113.21", "operator.read")
		h := connect(t, oc)
		if h.Auth.Method != "trusted-proxy" {
			t.Errorf("hello-ok auth method %q, want trusted-proxy", h.Auth.Method)
		}
		// What the gateway itself granted: identityScopes gives the viewer everything, so
		// only moltgate's cap can leave it read-only.
		if !sameSet(h.Auth.Scopes, []string{"operator.read"}) {
			t.Errorf("gateway granted the viewer %q, want only operator.read", h.Auth.Scopes)
		}
		mustOK(t, call(t, oc, "sessions.list", map[string]any{}), "viewer's sessions.list")
		for _, m := range []struct {
			method string
			params any
		}{
			{"chat.send", map[string]any{"sessionKey": "agent:main:tpws-viewer", "message": "hi", "idempotencyKey": "tpws-1"}},
			{"config.get", map[string]any{}},
		} {
			f := call(t, oc, m.method, m.params)
			if f.OK || f.Error == nil || f.Error.Code != "FORBIDDEN" || !strings.Contains(f.Error.Message, "moltgate: role_forbids") {
				t.Errorf("viewer's %s: %.300s, want moltgate's FORBIDDEN role_forbids", m.method, f.Raw)
			}
		}
		// chat.toolTitles needs operator.write at the gateway, so the policy classes it
		// "operate" (policies' TestWSClassesNoLooserThanGatewayScopes holds ws.json to the
		// gateway's own scope table): moltgate refuses it before the gateway has to.
		if f := call(t, oc, "chat.toolTitles", toolTitles); f.OK || f.Error == nil || f.Error.Code != "FORBIDDEN" ||
			!strings.Contains(f.Error.Message, "moltgate: role_forbids") {
			t.Errorf("viewer's chat.toolTitles: %.300s, want moltgate's FORBIDDEN role_forbids", f.Raw)
		}
		mustOK(t, call(t, oc, "status", map[string]any{}), "viewer's status after the refusals")
		viewerConn = oc
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("removed viewer loses the socket within a second", func(t *testing.T) {
		closed := make(chan error, 1)
		go func() {
			rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for {
				if _, _, err := viewerConn.Conn.Read(rctx); err != nil {
					closed <- err
					return
				}
			}
		}()
		if _, err := mg.admin().RemoveMember(ctxTimeout(t, 30*time.Second), "gwtpws", viewer); err != nil {
			t.Fatalf("remove member: %v", err)
		}
		select {
		case err := <-closed:
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || !strings.Contains(ce.Reason, "not_a_member") {
				t.Errorf("viewer's socket ended with %v, want close 1008 not_a_member", err)
			}
		case <-time.After(time.Second):
			t.Fatal("viewer's socket still open 1s after the member was removed")
		}
		// The owner's socket is untouched by the recheck.
		mustOK(t, call(t, ownerConn, "sessions.list", map[string]any{}), "owner's sessions.list after the removal")
	})

	t.Run("audit", func(t *testing.T) {
		var got []string
		for _, e := range mg.events(t) {
			if e.Type == audit.TypePolicyDeny && e.Gateway == "gwtpws" {
				got = append(got, fmt.Sprintf("%s/%s/%s", e.Actor.ID, e.Reason, e.Details["method"]))
			}
		}
		for _, want := range []string{viewer + "/role_forbids/chat.send", viewer + "/role_forbids/config.get", viewer + "/not_a_member/"} {
			if !slices.Contains(got, want) {
				t.Errorf("no audit event %q; have %q", want, got)
			}
		}
	})
	ownerConn.Close()
}

// helloOK is the part of the gateway's hello-ok this test reads.
type helloOK struct {
	Type string `json:"type"`
	Auth struct {
		Method string   `json:"method"`
		Role   string   `json:"role"`
		Scopes []string `json:"scopes"`
	} `json:"auth"`
	Features struct {
		Methods []string `json:"methods"`
	} `json:"features"`
}

// dialMoltgateFrom opens a WebSocket to moltgate's proxy listener from the loopback address
// src, whatever host url names (it sets the Host moltgate routes by), and reads the
// gateway's connect.challenge.
func dialMoltgateFrom(ctx context.Context, mg *instance, src, url string, h http.Header) (*testenv.OpenClawConn, *http.Response, error) {
	listen := strings.TrimPrefix(mg.proxyURL, "http://")
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, listen)
		}}}
	return testenv.DialOpenClawWith(ctx, url, &websocket.DialOptions{HTTPClient: client, HTTPHeader: h})
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
