package wsrelay

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/moltgate/moltgate/registry"
)

// A device proof goes to the gateway only when nothing it signs is changed: a browser of the
// gateway's own origin in token mode, whose connect carries no token, on an upgrade that
// carries the scope cap.
func TestRewriteConnectKeepsOnlyVerifiableDeviceProofs(t *testing.T) {
	t.Parallel()
	device := json.RawMessage(`{"id":"dev","publicKey":"pk","signature":"sig","signedAt":1,"nonce":"n1"}`)
	scopes := `["operator.admin","operator.read","operator.write","operator.approvals","operator.questions","operator.pairing"]`
	for _, tc := range []struct {
		name     string
		mode     registry.AuthMode
		origin   string
		capped   bool
		auth     string // the client's params.auth, "" for none
		wantKept bool
		nonce    string // of the relay's own challenge, for a socket it identified
	}{
		{"Control UI, token mode", registry.AuthToken, "http://127.0.0.1:18789", true, "", true, ""},
		{"Control UI, empty auth", registry.AuthToken, "http://127.0.0.1:18789", true, `{}`, true, ""},
		{"Control UI, a typed password (not signed)", registry.AuthToken, "http://127.0.0.1:18789", true, `{"password":"guess"}`, true, ""},
		{"signed over a pasted token", registry.AuthToken, "http://127.0.0.1:18789", true, `{"token":"pasted"}`, false, ""},
		{"signed over a device token", registry.AuthToken, "http://127.0.0.1:18789", true, `{"deviceToken":"dt"}`, false, ""},
		{"signed over a setup code", registry.AuthToken, "http://127.0.0.1:18789", true, `{"bootstrapToken":"bt"}`, false, ""},
		{"auth not an object", registry.AuthToken, "http://127.0.0.1:18789", true, `"x"`, false, ""},
		{"not a browser of the gateway's origin", registry.AuthToken, "", true, "", false, ""},
		{"no scope cap on the upgrade", registry.AuthToken, "http://127.0.0.1:18789", false, "", false, ""},
		{"trusted-proxy: admitted device-less", registry.AuthTrustedProxy, "http://gwa.gw.localhost:8080", true, "", false, ""},
		{"identified by the relay, which sent the challenge", registry.AuthToken, "http://127.0.0.1:18789", true, "", false, "relay-nonce"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := testSession(t, tc.mode)
			s.Subject.ID = "user_viewer"
			c := &conn{s: s, upstreamOrigin: tc.origin, upstreamCapped: tc.capped, nonce: tc.nonce}
			params := map[string]json.RawMessage{"role": json.RawMessage(`"operator"`), "scopes": json.RawMessage(scopes), "device": device,
				"client": json.RawMessage(`{"id":"openclaw-control-ui","mode":"webchat","displayName":"me"}`)}
			if tc.auth != "" {
				params["auth"] = json.RawMessage(tc.auth)
			}
			raw, _ := json.Marshal(map[string]any{"type": "req", "id": "c1", "method": "connect", "params": params})
			f, err := parseFrame(raw)
			if err != nil {
				t.Fatal(err)
			}
			out, kept, err := c.rewriteConnect(f)
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Params struct {
					Auth   map[string]string `json:"auth"`
					Device json.RawMessage   `json:"device"`
					Scopes json.RawMessage   `json:"scopes"`
					Client map[string]string `json:"client"`
				} `json:"params"`
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			p := got.Params
			if kept != tc.wantKept || (len(p.Device) > 0) != tc.wantKept {
				t.Fatalf("kept %v, device upstream %s; want kept %v", kept, p.Device, tc.wantKept)
			}
			switch {
			case tc.wantKept:
				// Everything the proof signs, as signed; the gateway token where the signature
				// does not reach.
				if !bytes.Equal(p.Device, device) || !jsonEqual(p.Scopes, scopes) {
					t.Errorf("device %s scopes %s upstream, want them as the client signed them", p.Device, p.Scopes)
				}
				if len(p.Auth) != 1 || p.Auth["password"] != "gateway-token" {
					t.Errorf("auth upstream %v, want only the gateway token as password", p.Auth)
				}
			case tc.mode == registry.AuthToken:
				if len(p.Auth) != 1 || p.Auth["token"] != "gateway-token" || !jsonEqual(p.Scopes, `["operator.read"]`) {
					t.Errorf("auth %v scopes %s upstream, want the gateway token and the role's scopes", p.Auth, p.Scopes)
				}
			default:
				if p.Auth != nil || !jsonEqual(p.Scopes, `["operator.read"]`) {
					t.Errorf("auth %v scopes %s upstream, want no auth and the role's scopes", p.Auth, p.Scopes)
				}
			}
			if p.Client["displayName"] != "user_viewer" {
				t.Errorf("client upstream %v, want it named after the subject", p.Client)
			}
		})
	}
}

func jsonEqual(a json.RawMessage, b string) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal([]byte(b), &y) == nil && mustMarshal(x) == mustMarshal(y)
}

func mustMarshal(v any) string { b, _ := json.Marshal(v); return string(b) }

func TestScrubHello(t *testing.T) {
	t.Parallel()
	id := json.RawMessage(`"c1"`)
	for _, tc := range []struct {
		name      string
		in        string
		wantFound bool
		want      string // "" for unchanged
	}{
		{"hello-ok with a device token", `{"type":"res","id":"c1","ok":true,"payload":{"type":"hello-ok","auth":{"method":"token","role":"operator","scopes":["operator.read"],"deviceToken":"secret","issuedAtMs":5,"deviceTokens":[{"deviceToken":"more"}],"recoveryMigrationAllowed":true,"recoveryScope":"h"},"features":{"methods":["health"]}}}`,
			true, `{"type":"res","id":"c1","ok":true,"payload":{"type":"hello-ok","auth":{"method":"token","role":"operator","scopes":["operator.read"],"recoveryScope":"h"},"features":{"methods":["health"]}}}`},
		{"hello-ok without one", `{"type":"res","id":"c1","ok":true,"payload":{"type":"hello-ok","auth":{"method":"token"}}}`, true, ""},
		{"a refusal", `{"type":"res","id":"c1","ok":false,"error":{"code":"NOT_PAIRED"}}`, true, ""},
		{"an event first", `{"type":"event","event":"tick","payload":{"auth":{"deviceToken":"x"}}}`, false, ""},
		{"another request's answer", `{"type":"res","id":"c2","ok":true,"payload":{"auth":{"deviceToken":"x"}}}`, false, ""},
		{"not JSON", `nope`, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, found, err := scrubHello([]byte(tc.in), id)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			if want == "" {
				want = tc.in
			}
			if found != tc.wantFound || (want != tc.in && !jsonEqual(out, want)) || (want == tc.in && string(out) != tc.in) {
				t.Fatalf("got %s found %v, want %s found %v", out, found, want, tc.wantFound)
			}
		})
	}
}
