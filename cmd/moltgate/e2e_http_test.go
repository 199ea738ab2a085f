package main_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
)

// gatewayToken is the token-mode test gateway's token: 32 bytes, hex, as moltgate issues them.
const gatewayToken = "5f0c7e2a9b41d3c8e6a7f21b09d84c3e7a6b5d4c3b2a19087f6e5d4c3b2a1908"

// httpCase is one request through moltgate and everything it must cause.
type httpCase struct {
	name    string
	from    string // source address; default 127.0.0.1 (an untrusted client)
	host    string // default gwtok.gw.localhost
	method  string
	path    string
	body    string
	header  map[string]string
	status  int
	reason  string // moltgate refusal reason; "" for a gateway answer
	body2   string // substring of the gateway's answer
	reached bool   // whether the gateway received it
	check   func(t *testing.T, rec testenv.Recorded)
	event   string // audit event type expected for this request; "" none
}

func TestHTTPEndToEnd(t *testing.T) {
	tokGW := testenv.SharedOpenClaw(t, testenv.OpenClawOptions{Token: gatewayToken})
	tpGW := testenv.SharedOpenClaw(t, testenv.OpenClawOptions{Mode: testenv.ModeTrustedProxy,
		TrustedProxyUsers: []string{"user_tp_owner", "user_tp_viewer"}})
	tokTap, tpTap := testenv.Tap(t, tokGW.URL), testenv.Tap(t, tpGW.URL)
	clerk := clerktest.New(t)
	secretFile := filepath.Join(t.TempDir(), "clerk.key")
	if err := os.WriteFile(secretFile, []byte(clerk.SecretKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	mg := startMoltgate(t, fmt.Sprintf(`
listen: @LISTEN@
admin_listen: @ADMIN@
data_dir: @DATA@
admin_token: {file: @ADMINTOKEN@}
trusted_proxies: [127.0.0.2]
clerk:
  api_url: %s
  secret_key: {file: %s}
  issuer: %s
  authorized_parties: [%s]
log: {level: debug}
# Each case counts the audit events its request wrote: no allow may be sampled in.
policies: {decision_log: {allow_sample_rate: 0}}
`, clerk.URL, secretFile, clerk.Issuer(), clerktest.DefaultAuthorizedParty))

	// Gateways through the CLI: the token-mode one with the gateway's existing token, the
	// trusted-proxy one with a generated token printed once.
	tokFile := filepath.Join(t.TempDir(), "gw.token")
	os.WriteFile(tokFile, []byte(tokGW.Token+"\n"), 0o600)
	mg.cli(t, "gateway", "add", "--id", "gwtok", "--tenant", "tenant-a", "--owner", "user_owner",
		"--upstream", tokTap.URL, "--token-file", tokFile)
	out := mg.cli(t, "gateway", "add", "--id", "gwtp", "--tenant", "tenant-b", "--owner", "user_tp_owner",
		"--upstream", tpTap.URL, "--auth-mode", "trusted-proxy")
	tpToken := regexp.MustCompile(`(?m)^[0-9a-f]{64}$`).FindString(out)
	if tpToken == "" {
		t.Fatalf("gateway add printed no token:\n%s", out)
	}
	mg.cli(t, "gateway", "member", "add", "gwtok", "user_viewer", "viewer")
	mg.cli(t, "gateway", "member", "add", "gwtok", "user_operator", "operator")
	mg.cli(t, "gateway", "member", "add", "gwtp", "user_tp_viewer", "viewer")
	mg.cli(t, "gateway", "skills", "set", "gwtok", "--deny", "exec,browser")
	if list := mg.cli(t, "gateway", "list"); !strings.Contains(list, "gwtok") || !strings.Contains(list, "gwtp") {
		t.Fatalf("gateway list:\n%s", list)
	}
	if show := mg.cli(t, "gateway", "show", "gwtok"); strings.Contains(show, tokGW.Token) {
		t.Fatal("gateway show prints the token")
	}

	user := func(sub string) map[string]string {
		return map[string]string{"Authorization": "Bearer " + clerk.Mint(clerktest.Claims{Subject: sub})}
	}
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	with := func(h map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range h {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	ownerJWT := clerk.Mint(clerktest.Claims{Subject: "user_owner"})
	upstreamHasOnlyGatewayToken := func(t *testing.T, rec testenv.Recorded) {
		if got := rec.Header.Get("Authorization"); got != "Bearer "+tokGW.Token {
			t.Errorf("gateway got Authorization %q, want the gateway token", got)
		}
		if c := rec.Header.Get("Cookie"); strings.Contains(c, "__session") || strings.Contains(c, "eyJ") {
			t.Errorf("gateway got the session cookie: %q", c)
		}
		for _, h := range []string{"X-Forwarded-For", "X-Forwarded-User", "X-Openclaw-Scopes", "Cf-Connecting-Ip"} {
			if v := rec.Header.Get(h); v != "" {
				t.Errorf("gateway got %s: %q", h, v)
			}
		}
	}
	const sessionsList = `{"tool":"sessions_list","args":{}}`
	const configJSON = `"serverVersion":"2026.9.6"`
	cases := []httpCase{
		{name: "owner reads the Control UI config", path: "/control-ui-config.json", header: with(bearer(ownerJWT), "Cookie", "__session="+ownerJWT+"; theme=dark"),
			status: 200, body2: configJSON, reached: true, check: func(t *testing.T, rec testenv.Recorded) {
				upstreamHasOnlyGatewayToken(t, rec)
				if c := rec.Header.Get("Cookie"); c != "theme=dark" {
					t.Errorf("gateway got Cookie %q, want the other cookies only", c)
				}
			}},
		{name: "viewer reads", path: "/control-ui-config.json", header: user("user_viewer"), status: 200, body2: configJSON, reached: true, check: upstreamHasOnlyGatewayToken},
		{name: "viewer may not invoke tools", method: "POST", path: "/tools/invoke", body: sessionsList, header: user("user_viewer"),
			status: 403, reason: "role_forbids", event: audit.TypePolicyDeny},
		{name: "operator invokes an allowed tool", method: "POST", path: "/tools/invoke", body: sessionsList, header: user("user_operator"),
			status: 200, body2: `"ok":true`, reached: true, check: func(t *testing.T, rec testenv.Recorded) {
				upstreamHasOnlyGatewayToken(t, rec)
				if string(rec.Body) != sessionsList {
					t.Errorf("gateway got body %q, want it intact", rec.Body)
				}
			}},
		{name: "operator is refused a denied tool", method: "POST", path: "/tools/invoke", body: `{"tool":"exec","args":{"command":"id"}}`, header: user("user_operator"),
			status: 403, reason: "tool_denied", event: audit.TypePolicyDeny},
		{name: "stranger", path: "/control-ui-config.json", header: user("user_stranger"), status: 403, reason: "not_a_member", event: audit.TypePolicyDeny},
		{name: "anonymous", path: "/control-ui-config.json", status: 401, reason: "unauthenticated", event: audit.TypePolicyDeny},
		{name: "gateway token client", path: "/control-ui-config.json", header: bearer(tokGW.Token), status: 200, body2: configJSON, reached: true, check: upstreamHasOnlyGatewayToken},
		{name: "another tenant's gateway token", path: "/control-ui-config.json", header: bearer(tpToken), status: 403, reason: "wrong_gateway", event: audit.TypePolicyDeny},
		{name: "expired session", path: "/control-ui-config.json",
			header: bearer(clerk.Mint(clerktest.Claims{Subject: "user_owner", IssuedAt: time.Now().Add(-time.Hour), Expiry: time.Now().Add(-30 * time.Minute)})),
			status: 401, reason: "expired", event: audit.TypeAuthnFailure},
		{name: "forged: alg none", path: "/control-ui-config.json", header: bearer(clerk.ForgeAlgNone(clerktest.Claims{Subject: "user_owner"})),
			status: 401, event: audit.TypeAuthnFailure},
		{name: "forged: HS256 with the public key", path: "/control-ui-config.json", header: bearer(clerk.ForgeHS256WithPublicKey(clerktest.Claims{Subject: "user_owner"})),
			status: 401, event: audit.TypeAuthnFailure},
		{name: "forged: another key", path: "/control-ui-config.json", header: bearer(clerk.ForgeForeignKey(clerktest.Claims{Subject: "user_owner"})),
			status: 401, reason: "bad_signature", event: audit.TypeAuthnFailure},
		{name: "traversal is normalised before the decision", path: "/assets/../control-ui-config.json", header: bearer(ownerJWT),
			status: 200, body2: configJSON, reached: true, check: func(t *testing.T, rec testenv.Recorded) {
				if rec.Path != "/control-ui-config.json" || rec.RawPath != "" {
					t.Errorf("gateway got path %q (raw %q)", rec.Path, rec.RawPath)
				}
			}},
		// The gateway trims the tool name and runs body.name before body.tool (see
		// "the gateway runs name before tool" below): no spelling reaches a denied tool.
		{name: "denied tool behind white space", method: "POST", path: "/tools/invoke", body: `{"tool":" exec\n","args":{"command":"id"}}`, header: user("user_operator"),
			status: 403, reason: "tool_denied", event: audit.TypePolicyDeny},
		{name: "denied tool by its alias", method: "POST", path: "/tools/invoke", body: `{"tool":"bash","args":{"command":"id"}}`, header: user("user_operator"),
			status: 403, reason: "tool_denied", event: audit.TypePolicyDeny},
		{name: "denied tool in name, allowed one in tool", method: "POST", path: "/tools/invoke", body: `{"name":"exec","tool":"sessions_list","args":{"command":"id"}}`, header: user("user_operator"),
			status: 400, reason: "ambiguous_tool", event: audit.TypePolicyDeny},
		{name: "tool named by name alone", method: "POST", path: "/tools/invoke", body: `{"name":"sessions_list","args":{}}`, header: user("user_operator"),
			status: 200, body2: `"ok":true`, reached: true},
		// The gateway serves its secrets tool (list, delete the secret store) to the shared
		// token; moltgate holds it as the secrets.* owner methods.
		{name: "secrets tool is the owner's", method: "POST", path: "/tools/invoke", body: `{"tool":"secrets","args":{"action":"list"}}`, header: user("user_operator"),
			status: 403, reason: "owner_only", event: audit.TypePolicyDeny},
		{name: "denied tool through the capability-scoped path", method: "POST", path: "/__openclaw__/cap/x/tools/invoke", body: `{"tool":"exec","args":{"command":"id"}}`, header: user("user_operator"),
			status: 403, reason: "tool_denied", event: audit.TypePolicyDeny},
		{name: "encoded dot segments", path: "/x/%2e%2e/tools/invoke", method: "POST", body: `{"tool":"exec"}`, header: user("user_operator"),
			status: 403, reason: "tool_denied", event: audit.TypePolicyDeny},
		{name: "encoded slash refused", path: "/tools%2finvoke", method: "POST", body: `{"tool":"exec"}`, header: user("user_operator"),
			status: 400, reason: "bad_path", event: audit.TypePolicyDeny},
		{name: "host naming a gateway under another", host: "gwtp.gwtok.gw.localhost", path: "/control-ui-config.json", header: bearer(ownerJWT),
			status: 404, reason: "unknown_gateway", event: audit.TypeProxyProbe}, // the client's first: a summary at once
		{name: "host with port and trailing dot", host: "GWTOK.gw.localhost.:8080", path: "/control-ui-config.json", header: bearer(ownerJWT),
			status: 200, body2: configJSON, reached: true},
		// Within a minute of the client's last summary: counted in its next one, no event now.
		{name: "unknown gateway", host: "nope.gw.localhost", path: "/", header: bearer(ownerJWT), status: 404, reason: "unknown_gateway"},
		{name: "trusted-proxy owner", host: "gwtp.gw.localhost", from: "127.0.0.2", path: "/control-ui-config.json",
			header: with(user("user_tp_owner"), "X-Forwarded-For", "203.0.113.5", "X-Openclaw-Scopes", "operator.admin"),
			status: 200, body2: configJSON, reached: true, check: func(t *testing.T, rec testenv.Recorded) {
				want := map[string]string{"X-Forwarded-User": "user_tp_owner", "X-Forwarded-For": "203.0.113.5",
					"X-Openclaw-Scopes": "operator.read,operator.write,operator.admin", "Authorization": ""}
				for k, v := range want {
					if got := rec.Header.Get(k); got != v {
						t.Errorf("gateway got %s %q, want %q", k, got, v)
					}
				}
			}},
		{name: "trusted-proxy viewer capped to read", host: "gwtp.gw.localhost", from: "127.0.0.2", method: "GET", path: "/control-ui-config.json",
			header: with(user("user_tp_viewer"), "X-Forwarded-For", "203.0.113.6", "X-Openclaw-Scopes", "operator.admin"),
			status: 200, reached: true, check: func(t *testing.T, rec testenv.Recorded) {
				if got := rec.Header.Get("X-Openclaw-Scopes"); got != "operator.read" {
					t.Errorf("viewer scopes: got %q, want operator.read", got)
				}
			}},
		{name: "trusted-proxy gateway token client", host: "gwtp.gw.localhost", from: "127.0.0.2", method: "POST", path: "/tools/invoke", body: sessionsList,
			header: with(bearer(tpToken), "X-Forwarded-For", "203.0.113.7"), status: 401, reason: "", reached: true,
			check: func(t *testing.T, rec testenv.Recorded) {
				// The gateway allows only the users it lists; moltgate names the token client.
				if got := rec.Header.Get("X-Forwarded-User"); got != "token:gwtp" {
					t.Errorf("gateway got user %q", got)
				}
			}},
	}
	runCases(t, mg, map[string]*testenv.TapServer{"gwtok": tokTap, "gwtp": tpTap}, cases)

	// Why moltgate reads the tool endpoint as it does: asked directly, the gateway runs the
	// tool in body.name and ignores the one in body.tool (here one that does not exist), and
	// serves its capability-scoped path as /tools/invoke.
	t.Run("the gateway's own reading of tool calls", func(t *testing.T) {
		for _, c := range []struct{ path, body string }{
			{"/tools/invoke", `{"name":" sessions_list ","tool":"no_such_tool","args":{}}`},
			{"/__openclaw__/cap/x/tools/invoke", `{"tool":"sessions_list","args":{}}`},
		} {
			status, body := postJSON(t, tokGW.URL+c.path, "", tokGW.Token, c.body)
			if status != 200 || !strings.Contains(body, `"ok":true`) {
				t.Fatalf("POST %s %s: gateway answered %d %s; want sessions_list run", c.path, c.body, status, body)
			}
		}
	})

	// The IP allowlist binds the owner too; a spoofed X-Forwarded-For from an untrusted peer
	// changes nothing, the same header from the trusted proxy does.
	mg.cli(t, "gateway", "allowlist", "set", "gwtok", "192.0.2.0/24")
	runCases(t, mg, map[string]*testenv.TapServer{"gwtok": tokTap}, []httpCase{
		{name: "allowlist refuses the owner from outside", path: "/control-ui-config.json", header: bearer(ownerJWT),
			status: 403, reason: "ip_not_allowed", event: audit.TypePolicyDeny},
		{name: "allowlist: spoofed forwarded-for from untrusted peer", path: "/control-ui-config.json",
			header: with(bearer(ownerJWT), "X-Forwarded-For", "192.0.2.9", "CF-Connecting-IP", "192.0.2.9"),
			status: 403, reason: "ip_not_allowed", event: audit.TypePolicyDeny},
		{name: "allowlist: client inside via trusted proxy", from: "127.0.0.2", path: "/control-ui-config.json",
			header: with(bearer(ownerJWT), "CF-Connecting-IP", "192.0.2.9"), status: 200, body2: configJSON, reached: true},
		{name: "allowlist binds gateway tokens", path: "/control-ui-config.json", header: bearer(tokGW.Token),
			status: 403, reason: "ip_not_allowed", event: audit.TypePolicyDeny},
	})
	mg.cli(t, "gateway", "allowlist", "set", "gwtok")

	// A member removed through the admin API is refused on the next request.
	mg.cli(t, "gateway", "member", "remove", "gwtok", "user_viewer")
	runCases(t, mg, map[string]*testenv.TapServer{"gwtok": tokTap}, []httpCase{
		{name: "removed member", path: "/control-ui-config.json", header: user("user_viewer"), status: 403, reason: "not_a_member", event: audit.TypePolicyDeny},
	})

	// An API token made through the CLI acts with its role (here operator), reaching the
	// gateway with the gateway's own token only; revoked, it is refused.
	made := strings.Split(strings.TrimSpace(mg.cli(t, "gateway", "api-token", "create", "gwtok", "operator", "--name", "e2e ci", "--ttl", "1h")), "\n")
	apiToken, apiTokenID := made[len(made)-1], strings.Fields(made[0])[2]
	runCases(t, mg, map[string]*testenv.TapServer{"gwtok": tokTap}, []httpCase{
		{name: "API token reads", path: "/control-ui-config.json", header: bearer(apiToken), status: 200, body2: configJSON, reached: true, check: upstreamHasOnlyGatewayToken},
		{name: "API token invokes a tool", method: "POST", path: "/tools/invoke", body: sessionsList, header: bearer(apiToken),
			status: 200, body2: `"ok":true`, reached: true, check: upstreamHasOnlyGatewayToken},
		{name: "API token, a denied tool", method: "POST", path: "/tools/invoke", body: `{"tool":"exec","args":{"command":"id"}}`, header: bearer(apiToken),
			status: 403, reason: "tool_denied", event: audit.TypePolicyDeny},
		{name: "API token, an owner route", method: "POST", path: "/api/v1/admin/rpc", body: `{}`, header: bearer(apiToken),
			status: 403, reason: "owner_only", event: audit.TypePolicyDeny},
	})
	mg.cli(t, "gateway", "api-token", "revoke", "gwtok", apiTokenID)
	runCases(t, mg, map[string]*testenv.TapServer{"gwtok": tokTap}, []httpCase{
		{name: "revoked API token", path: "/control-ui-config.json", header: bearer(apiToken), status: 401, reason: "unknown_token", event: audit.TypeAuthnFailure},
	})

	// Admin changes were audited, and no event anywhere holds a credential.
	evs := mg.events(t)
	changes := 0
	for _, e := range evs {
		if e.Type == audit.TypeAdminChange && e.Actor.Kind == "admin_token" {
			changes++
		}
		raw, _ := json.Marshal(e)
		for _, secret := range []string{tokGW.Token, tpToken, mg.adminToken, ownerJWT[:40], clerk.SecretKey(), apiToken} {
			if strings.Contains(string(raw), secret) {
				t.Fatalf("audit event holds a secret: %s", raw)
			}
		}
	}
	// gateway add ×2, member add ×3, skills set, allowlist set ×2, member remove, API token
	// create and revoke.
	if changes != 11 {
		t.Fatalf("admin changes audited: got %d, want 11 (one per CLI change)", changes)
	}
	logs, _ := os.ReadFile(mg.logPath)
	for _, secret := range []string{tokGW.Token, tpToken, mg.adminToken, ownerJWT[:40], clerk.SecretKey(), apiToken} {
		if strings.Contains(string(logs), secret) {
			t.Fatal("moltgate's log holds a secret")
		}
	}
}

// runCases sends each case and checks status, body, what the gateway received and the
// audit event.
func runCases(t *testing.T, mg *instance, taps map[string]*testenv.TapServer, cases []httpCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.method == "" {
				tc.method = http.MethodGet
			}
			if tc.host == "" {
				tc.host = "gwtok.gw.localhost"
			}
			if tc.from == "" {
				tc.from = "127.0.0.1"
			}
			for _, tap := range taps {
				tap.Reset()
			}
			before := len(mg.events(t))
			req, err := http.NewRequestWithContext(t.Context(), tc.method, mg.proxyURL+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Host = tc.host
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := clientFrom(tc.from).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status: got %d, want %d; body %s", resp.StatusCode, tc.status, body)
			}
			if tc.reason != "" {
				var refusal map[string]string
				if err := json.Unmarshal(body, &refusal); err != nil || refusal["reason"] != tc.reason || refusal["error"] == "" {
					t.Fatalf("refusal: got %s, want reason %q", body, tc.reason)
				}
			}
			if tc.body2 != "" && !strings.Contains(string(body), tc.body2) {
				t.Fatalf("body: got %s, want it to contain %s", tail(string(body), 5), tc.body2)
			}
			var recs []testenv.Recorded
			for _, tap := range taps {
				recs = append(recs, tap.Requests()...)
			}
			if reached := len(recs) > 0; reached != tc.reached {
				t.Fatalf("gateway reached: got %v (%d requests), want %v", reached, len(recs), tc.reached)
			}
			if tc.check != nil && len(recs) > 0 {
				tc.check(t, recs[len(recs)-1])
			}
			evs := mg.events(t)
			if tc.event == "" {
				if len(evs) != before {
					t.Fatalf("unexpected audit event: %+v", evs[len(evs)-1])
				}
				return
			}
			if len(evs) != before+1 {
				t.Fatalf("audit: got %d new events, want 1", len(evs)-before)
			}
			e := evs[len(evs)-1]
			if e.Type != tc.event || e.Outcome != "deny" || e.RequestID != resp.Header.Get("X-Request-Id") {
				t.Fatalf("audit event %+v: want %s for request %s", e, tc.event, resp.Header.Get("X-Request-Id"))
			}
			if tc.reason != "" && e.Reason != tc.reason {
				t.Fatalf("audit reason: got %q, want %q", e.Reason, tc.reason)
			}
		})
	}
}
