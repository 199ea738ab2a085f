package main_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
)

// TestWSIdentifyEndToEnd: nothing unauthenticated reaches a gateway (issue 10). The built
// moltgate in front of a real OpenClaw gateway in token mode, with a recording tap between
// them that shows every upgrade the gateway received. A client that upgrades without a
// credential is answered by moltgate (its own connect.challenge) until its connect request
// is identified and allowed; only then is the gateway dialled, and the gateway's hello-ok
// answers the client.
func TestWSIdentifyEndToEnd(t *testing.T) {
	const owner, viewer = "user_wsid_owner", "user_wsid_viewer"
	gw := testenv.SharedOpenClaw(t, testenv.OpenClawOptions{Token: gatewayToken})
	tap := testenv.Tap(t, gw.URL)
	clerk := clerktest.New(t)
	mg := startMoltgate(t, `
listen: @LISTEN@
admin_listen: @ADMIN@
data_dir: @DATA@
admin_token: {file: @ADMINTOKEN@}
websocket: {identify_timeout: 2s, max_conns_per_subject: 2}
`+clerkConfig(t, clerk))
	tokFile := filepath.Join(t.TempDir(), "gw.token")
	if err := os.WriteFile(tokFile, []byte(gw.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mg.cli(t, "gateway", "add", "--id", "gwid", "--tenant", "tenant-wsid", "--owner", owner,
		"--upstream", tap.URL, "--token-file", tokFile)
	mg.cli(t, "gateway", "member", "add", "gwid", viewer, "viewer")
	const url = "ws://gwid.gw.localhost/"

	upgrades := func() []testenv.Recorded {
		var out []testenv.Recorded
		for _, r := range tap.Requests() {
			if strings.EqualFold(r.Upgrade, "websocket") {
				out = append(out, r)
			}
		}
		return out
	}
	noUpgrade := func(t *testing.T, what string) {
		t.Helper()
		if ups := upgrades(); len(ups) != 0 {
			t.Fatalf("%s: the gateway received %d upgrades, want none", what, len(ups))
		}
	}
	// dial upgrades through moltgate and returns the socket after its first frame, the
	// challenge (which DialOpenClaw requires).
	dial := func(t *testing.T, h http.Header) *testenv.OpenClawConn {
		t.Helper()
		oc, resp, err := dialMoltgateFrom(ctxTimeout(t, 30*time.Second), mg, "127.0.0.1", url, h)
		if err != nil {
			status := 0
			if resp != nil {
				status = resp.StatusCode
			}
			t.Fatalf("upgrade: status %d: %v", status, err)
		}
		t.Cleanup(func() { oc.Conn.CloseNow() })
		return oc
	}
	closed := func(t *testing.T, oc *testenv.OpenClawConn) websocket.CloseError {
		t.Helper()
		ctx := ctxTimeout(t, 30*time.Second)
		for {
			if _, err := oc.ReadFrame(ctx); err != nil {
				var ce websocket.CloseError
				if !errors.As(err, &ce) {
					t.Fatalf("socket ended without a close frame: %v", err)
				}
				return ce
			}
		}
	}

	t.Run("an anonymous upgrade gets moltgate's challenge and reaches no gateway", func(t *testing.T) {
		oc := dial(t, nil)
		var p struct {
			Nonce string `json:"nonce"`
			TS    int64  `json:"ts"`
		}
		if err := json.Unmarshal(oc.Challenge.Payload, &p); err != nil || p.Nonce == "" || p.TS == 0 {
			t.Errorf("challenge %s, want a nonce and a ts (%v)", oc.Challenge.Raw, err)
		}
		oc.Close()
		noUpgrade(t, "anonymous upgrade")
	})

	t.Run("refused connects never dial", func(t *testing.T) {
		for _, tt := range []struct{ name, token, code string }{
			{"no credential", "", "UNAUTHORIZED"},
			{"stranger", clerk.Mint(clerktest.Claims{Subject: "user_wsid_stranger"}), "FORBIDDEN"},
			{"forged session", clerk.ForgeAlgNone(clerktest.Claims{Subject: owner}), "UNAUTHORIZED"},
		} {
			oc := dial(t, nil)
			f, err := oc.Connect(ctxTimeout(t, 30*time.Second), map[string]any{"token": tt.token})
			if err != nil || f.OK || f.Error == nil || f.Error.Code != tt.code {
				t.Errorf("%s: connect answered %.300s (%v), want %s", tt.name, f.Raw, err, tt.code)
			}
			if ce := closed(t, oc); ce.Code != websocket.StatusPolicyViolation {
				t.Errorf("%s: closed with %d %q, want 1008", tt.name, ce.Code, ce.Reason)
			}
		}
		noUpgrade(t, "refused connects")
	})

	t.Run("an upgrade from outside the allowlist gets no socket", func(t *testing.T) {
		mg.cli(t, "gateway", "allowlist", "set", "gwid", "192.0.2.0/24")
		defer mg.cli(t, "gateway", "allowlist", "set", "gwid")
		for _, h := range []http.Header{nil, {"Authorization": {"Bearer " + clerk.Mint(clerktest.Claims{Subject: owner})}}} {
			_, resp, err := dialMoltgateFrom(ctxTimeout(t, 30*time.Second), mg, "127.0.0.1", url, h)
			if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Errorf("upgrade from outside the allowlist (credential %v): %v, want 403", h != nil, err)
			}
		}
		noUpgrade(t, "upgrades from outside the allowlist")
	})

	t.Run("identified on connect: dialled only after the allow, answered by the gateway's hello-ok", func(t *testing.T) {
		oc := dial(t, nil)
		noUpgrade(t, "before connect")
		sent := time.Now()
		f, err := oc.Connect(ctxTimeout(t, 30*time.Second), map[string]any{"token": clerk.Mint(clerktest.Claims{Subject: viewer})})
		if err != nil || !f.OK {
			t.Fatalf("viewer's connect: %.300s (%v)", f.Raw, err)
		}
		var h helloOK
		if err := json.Unmarshal(f.Payload, &h); err != nil || h.Type != "hello-ok" || len(h.Features.Methods) < 100 {
			t.Fatalf("connect answered %.300s, want the gateway's hello-ok (%v)", f.Raw, err)
		}
		// The viewer asked for read, write and admin; the gateway granted what moltgate let
		// through.
		if !sameSet(h.Auth.Scopes, []string{"operator.read"}) {
			t.Errorf("gateway granted the viewer %q, want only operator.read", h.Auth.Scopes)
		}
		ups := upgrades()
		if len(ups) != 1 || ups[0].Status != http.StatusSwitchingProtocols {
			t.Fatalf("the gateway received %d upgrades (%+v), want one accepted", len(ups), ups)
		}
		if ups[0].Time.Before(sent) {
			t.Errorf("the gateway was dialled at %v, before the connect was sent at %v", ups[0].Time, sent)
		}
		if got := ups[0].Header.Get("X-Openclaw-Scopes"); got != "operator.read" {
			t.Errorf("gateway's upgrade had X-Openclaw-Scopes %q, want the viewer's cap", got)
		}
		if f, err := oc.Request(ctxTimeout(t, 30*time.Second), "sessions.list", map[string]any{}); err != nil || !f.OK {
			t.Errorf("viewer's sessions.list: %.300s (%v)", f.Raw, err)
		}
		if f, err := oc.Request(ctxTimeout(t, 30*time.Second), "config.get", map[string]any{}); err != nil || f.OK ||
			f.Error == nil || !strings.Contains(f.Error.Message, "moltgate: role_forbids") {
			t.Errorf("viewer's config.get: %.300s (%v), want moltgate's role_forbids", f.Raw, err)
		}
		oc.Close()
	})

	t.Run("a socket that does not identify in time is closed", func(t *testing.T) {
		before := len(upgrades())
		oc := dial(t, nil)
		start := time.Now()
		if ce := closed(t, oc); ce.Code != websocket.StatusPolicyViolation || ce.Reason != "identify timeout" {
			t.Errorf("silent socket closed with %d %q, want 1008 identify timeout", ce.Code, ce.Reason)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("closed after %v, want about identify_timeout (2s)", d)
		}
		if n := len(upgrades()); n != before {
			t.Errorf("the gateway received %d more upgrades, want none", n-before)
		}
	})

	t.Run("an identified socket counts as its subject's", func(t *testing.T) {
		bearer := http.Header{"Authorization": {"Bearer " + clerk.Mint(clerktest.Claims{Subject: owner})}}
		for range 2 { // max_conns_per_subject
			oc := dial(t, bearer)
			if f, err := oc.Connect(ctxTimeout(t, 30*time.Second), nil); err != nil || !f.OK {
				t.Fatalf("owner's connect: %.300s (%v)", f.Raw, err)
			}
		}
		before := len(upgrades())
		oc := dial(t, nil)
		f, err := oc.Connect(ctxTimeout(t, 30*time.Second), map[string]any{"token": clerk.Mint(clerktest.Claims{Subject: owner})})
		if err != nil || f.OK || f.Error == nil || f.Error.Code != "UNAVAILABLE" || !strings.Contains(f.Error.Message, "too_many_connections") {
			t.Errorf("owner's third socket: %.300s (%v), want UNAVAILABLE too_many_connections", f.Raw, err)
		}
		if n := len(upgrades()); n != before {
			t.Errorf("the refused socket was dialled: %d more upgrades", n-before)
		}
	})

	t.Run("audit", func(t *testing.T) {
		var got []string
		for _, e := range mg.events(t) {
			if e.Type == audit.TypePolicyDeny && e.Gateway == "gwid" {
				got = append(got, fmt.Sprintf("%s/%s", e.Actor.ID, e.Reason))
			}
		}
		for _, want := range []string{"/unauthenticated", "user_wsid_stranger/not_a_member", "/ip_not_allowed",
			owner + "/ip_not_allowed", "/identify_timeout", owner + "/too_many_connections"} {
			if !slices.Contains(got, want) {
				t.Errorf("no audit event %q; have %q", want, got)
			}
		}
	})
}
