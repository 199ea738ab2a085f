package wsrelay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/registry"
)

func TestCanonicalOrigin(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"http://gwa.gw.localhost:8080", "http://gwa.gw.localhost:8080"},
		{"HTTP://GWA.GW.LOCALHOST:8080", "http://gwa.gw.localhost:8080"},
		{"http://gwa.gw.localhost:8080/", "http://gwa.gw.localhost:8080"},
		{"https://gwa.gw.example.com:443", "https://gwa.gw.example.com"},
		{"http://gwa.gw.example.com:80", "http://gwa.gw.example.com"},
		{"https://gwa.gw.example.com:80", "https://gwa.gw.example.com:80"},
		{"http://127.0.0.1:18789", "http://127.0.0.1:18789"},
		{"http://[::1]:18789", "http://[::1]:18789"},
		{"http://[::1]", "http://[::1]"},
		// Not an origin a browser serializes, or not one of a web page.
		{"", ""},
		{"null", ""},
		{"gwa.gw.localhost", ""},
		{"ftp://gwa.gw.localhost", ""},
		{"chrome-extension://abcdefghijklmnopabcdefghijklmnop", ""},
		{"http://", ""},
		{"http://gwa.gw.localhost:", ""},
		{"http://gwa.gw.localhost:8080/path", ""},
		{"http://gwa.gw.localhost?x=1", ""},
		{"http://gwa.gw.localhost#f", ""},
		{"http://evil@gwa.gw.localhost", ""},
		{"http://gwa.gw.localhost\\@evil.example", ""},
		{"http://%67wa.gw.localhost", ""},
		{"http://gwa.gw.localhost :8080", ""},
		{"http://gwa.gw.localhost:80a", ""},
		{" http://gwa.gw.localhost", ""},
	} {
		if got := CanonicalOrigin(tc.in); got != tc.want {
			t.Errorf("CanonicalOrigin(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// testSession is a socket to gateway gwa, whose pages the browser reached at
// http://gwa.gw.localhost:8080, relayed to its upstream at http://127.0.0.1:18789.
func testSession(t *testing.T, mode registry.AuthMode) Session {
	t.Helper()
	up, err := url.Parse("http://127.0.0.1:18789")
	if err != nil {
		t.Fatal(err)
	}
	return Session{Entry: &registry.Entry{Gateway: registry.Gateway{ID: "gwa", AuthMode: mode}, UpstreamURL: up, Token: []byte("gateway-token")},
		PublicOrigin: "http://gwa.gw.localhost:8080", Scopes: []string{"operator.read"}}
}

// A browser socket is accepted from the gateway's own public origin and the configured
// dashboards only; the gateway gets an Origin it accepts for its own Control UI, derived from
// moltgate's configuration, never the browser's value.
func TestUpstreamOrigin(t *testing.T) {
	t.Parallel()
	rl := &Relay{cfg: Config{AllowedOrigins: []string{"https://app.example.test"}}}
	const refused = "refused"
	for _, tc := range []struct {
		name   string
		mode   registry.AuthMode
		public string // Session.PublicOrigin; "-" for none
		origin []string
		want   string // the upstream Origin, "" for none, or refused
	}{
		{"no origin: not a browser", registry.AuthToken, "", nil, ""},
		{"own origin, token mode: the upstream's own origin", registry.AuthToken, "", []string{"http://gwa.gw.localhost:8080"}, "http://127.0.0.1:18789"},
		{"own origin, other spelling", registry.AuthToken, "", []string{"HTTP://GWA.gw.localhost:8080/"}, "http://127.0.0.1:18789"},
		{"own origin, trusted-proxy: the public origin", registry.AuthTrustedProxy, "", []string{"http://gwa.gw.localhost:8080"}, "http://gwa.gw.localhost:8080"},
		{"own https origin, default port", registry.AuthTrustedProxy, "https://gwa.gw.example.com", []string{"https://gwa.gw.example.com:443"}, "https://gwa.gw.example.com"},
		{"dashboard: passed on as no browser", registry.AuthToken, "", []string{"https://app.example.test"}, ""},
		{"dashboard, trusted-proxy", registry.AuthTrustedProxy, "", []string{"https://app.example.test/"}, ""},
		{"another gateway's origin", registry.AuthToken, "", []string{"http://gwb.gw.localhost:8080"}, refused},
		{"another gateway's origin, trusted-proxy", registry.AuthTrustedProxy, "", []string{"http://gwb.gw.localhost:8080"}, refused},
		{"own host, another port", registry.AuthToken, "", []string{"http://gwa.gw.localhost:8081"}, refused},
		{"own host, another scheme", registry.AuthToken, "", []string{"https://gwa.gw.localhost:8080"}, refused},
		{"suffix of another site", registry.AuthToken, "", []string{"http://gwa.gw.localhost:8080.evil.example"}, refused},
		{"user info", registry.AuthToken, "", []string{"http://evil.example@gwa.gw.localhost:8080"}, refused},
		{"path", registry.AuthToken, "", []string{"http://gwa.gw.localhost:8080/x"}, refused},
		{"null (sandboxed page, file)", registry.AuthToken, "", []string{"null"}, refused},
		{"empty", registry.AuthToken, "", []string{""}, refused},
		{"two Origin headers", registry.AuthToken, "", []string{"http://gwa.gw.localhost:8080", "https://app.example.test"}, refused},
		{"no trusted public origin (plain HTTP, not loopback)", registry.AuthToken, "-", []string{"http://gwa.gw.localhost:8080"}, refused},
		{"the upstream's origin itself", registry.AuthToken, "", []string{"http://127.0.0.1:18789"}, refused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := testSession(t, tc.mode)
			switch tc.public {
			case "-":
				s.PublicOrigin = ""
			case "":
			default:
				s.PublicOrigin = tc.public
			}
			r := httptest.NewRequest(http.MethodGet, "http://gwa.gw.localhost:8080/", nil)
			for _, o := range tc.origin {
				r.Header.Add("Origin", o)
			}
			got, refusal := rl.upstreamOrigin(r, s)
			switch {
			case tc.want == refused && refusal == nil:
				t.Fatalf("got upstream Origin %q, want origin_not_allowed", got)
			case tc.want == refused && (refusal.Status != http.StatusForbidden || refusal.Reason != "origin_not_allowed"):
				t.Fatalf("got refusal %+v, want 403 origin_not_allowed", refusal)
			case tc.want != refused && refusal != nil:
				t.Fatalf("refused (%s), want upstream Origin %q", refusal.Reason, tc.want)
			case tc.want != refused && got != tc.want:
				t.Fatalf("got upstream Origin %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPublicOrigin(t *testing.T) {
	t.Parallel()
	loopback := &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 8080}
	public := &net.TCPAddr{IP: net.ParseIP("192.0.2.10"), Port: 8080}
	for _, tc := range []struct {
		name  string
		host  string
		local net.Addr
		https bool
		want  string
	}{
		{"plain HTTP on loopback", "gwa.gw.localhost:8080", loopback, false, "http://gwa.gw.localhost:8080"},
		{"host in capitals", "GWA.gw.localhost:8080", loopback, false, "http://gwa.gw.localhost:8080"},
		{"HTTPS", "gwa.gw.example.com", public, true, "https://gwa.gw.example.com"},
		{"HTTPS behind a proxy on loopback", "gwa.gw.example.com", loopback, true, "https://gwa.gw.example.com"},
		{"plain HTTP elsewhere: no page origin is trusted", "gwa.gw.example.com", public, false, ""},
		{"malformed Host", "gwa.gw.localhost:8080/x", loopback, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Host = tc.host
			if tc.https {
				r.TLS = &tls.ConnectionState{}
			}
			r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, tc.local))
			if got := PublicOrigin(r, tc.https); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// What the pinned gateway itself makes of the Origin moltgate sends (checkBrowserOrigin in
// its dist/origin-check-*.mjs), as its WebSocket connect checks a Control UI client: in token
// mode moltgate reaches it as a local client and its own origin passes with no setting; in
// trusted-proxy mode it is not local, and the public origin passes only when listed in
// gateway.controlUi.allowedOrigins. The controls show why moltgate must send an Origin at
// all (none is refused) and why not the browser's own (refused unless listed).
func TestGatewayAcceptsUpstreamOrigin(t *testing.T) {
	t.Parallel()
	token, trusted := testSession(t, registry.AuthToken), testSession(t, registry.AuthTrustedProxy)
	type check struct {
		Origin         string   `json:"origin"`
		RequestHost    string   `json:"requestHost"`
		AllowedOrigins []string `json:"allowedOrigins"`
		IsLocalClient  bool     `json:"isLocalClient"`
	}
	host := token.Entry.UpstreamURL.Host // the Host moltgate dials with
	for _, tc := range []struct {
		name string
		c    check
		ok   bool
	}{
		{"token mode: the upstream's own origin", check{Origin: gatewayOrigin(token), RequestHost: host, IsLocalClient: true}, true},
		{"token mode on a private address", check{Origin: "http://10.1.2.3:18789", RequestHost: "10.1.2.3:18789"}, true},
		{"trusted-proxy: the listed public origin", check{Origin: gatewayOrigin(trusted), RequestHost: host, AllowedOrigins: []string{"http://gwa.gw.localhost:8080"}}, true},
		{"control: no Origin", check{RequestHost: host, IsLocalClient: true}, false},
		{"control: the browser's origin, not listed", check{Origin: "http://gwa.gw.localhost:8080", RequestHost: host, IsLocalClient: true}, false},
		{"control: trusted-proxy, public origin not listed", check{Origin: gatewayOrigin(trusted), RequestHost: host}, false},
		{"control: trusted-proxy, the upstream's origin", check{Origin: gatewayOrigin(token), RequestHost: host}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var in bytes.Buffer
			if err := json.NewEncoder(&in).Encode(tc.c); err != nil {
				t.Fatal(err)
			}
			dir := testenv.OpenClawDir(t)
			cmd := exec.Command(filepath.Join(dir, "node_modules", ".bin", "node"), "testdata/gateway_origin_check.mjs")
			cmd.Env = append(os.Environ(), "OPENCLAW_DIR="+dir)
			cmd.Stdin = &in
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("node: %v", err)
			}
			var got struct {
				OK        bool   `json:"ok"`
				MatchedBy string `json:"matchedBy"`
				Reason    string `json:"reason"`
			}
			sc := bufio.NewScanner(bytes.NewReader(out))
			if !sc.Scan() || json.Unmarshal(sc.Bytes(), &got) != nil {
				t.Fatalf("node printed %q", out)
			}
			if got.OK != tc.ok {
				t.Fatalf("the gateway says ok=%v (%s%s) for %+v, want ok=%v", got.OK, got.MatchedBy, got.Reason, tc.c, tc.ok)
			}
		})
	}
}
