package authn_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/proxy/authn"
)

// credentialCase is one case of testdata/credential_cases.json, which
// drives TestCredential and seeds FuzzCredential.
type credentialCase struct {
	Name          string   `json:"name"`
	Authorization []string `json:"authorization"`
	Cookie        string   `json:"cookie"`
	WantToken     string   `json:"want_token"`
	WantOK        bool     `json:"want_ok"`
	WantReason    string   `json:"want_reason"`
}

func loadCredentialCases(t testing.TB) []credentialCase {
	t.Helper()
	raw, err := os.ReadFile("testdata/credential_cases.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []credentialCase
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cases); err != nil {
		t.Fatalf("credential_cases.json: %v", err)
	}
	return cases
}

func credentialRequest(auth []string, cookie string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "https://gw.example.test/", nil)
	for _, a := range auth {
		r.Header.Add("Authorization", a)
	}
	if cookie != "" {
		r.Header.Set("Cookie", cookie)
	}
	return r
}

func TestCredential(t *testing.T) {
	t.Parallel()
	cases := loadCredentialCases(t)
	long := strings.Repeat("a", authn.MaxCredentialSize)
	cases = append(cases,
		credentialCase{Name: "max size", Authorization: []string{"Bearer " + long}, WantToken: long, WantOK: true},
		credentialCase{Name: "oversized bearer", Authorization: []string{"Bearer " + long + "a"}, WantReason: authn.ReasonMalformed},
		credentialCase{Name: "oversized cookie", Cookie: "__session=" + long + "a", WantReason: authn.ReasonMalformed},
	)
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			t.Parallel()
			tok, ok, err := authn.Credential(credentialRequest(tc.Authorization, tc.Cookie))
			if got := authn.Reason(err); got != tc.WantReason {
				t.Fatalf("reason: got %q (%v), want %q", got, err, tc.WantReason)
			}
			if tok != tc.WantToken || ok != tc.WantOK {
				t.Errorf("got (%q, %v), want (%q, %v)", tok, ok, tc.WantToken, tc.WantOK)
			}
		})
	}
}

// Bearer reads what Credential reads from Authorization and nothing from cookies: a request
// with only a session cookie is anonymous to it (issue 15: the admin API took the cookie).
func TestBearer(t *testing.T) {
	t.Parallel()
	for _, tc := range loadCredentialCases(t) {
		t.Run(tc.Name, func(t *testing.T) {
			t.Parallel()
			want, wantOK, wantReason := tc.WantToken, tc.WantOK, tc.WantReason
			if len(tc.Authorization) == 0 {
				want, wantOK, wantReason = "", false, ""
			}
			tok, ok, err := authn.Bearer(credentialRequest(tc.Authorization, tc.Cookie))
			if got := authn.Reason(err); got != wantReason {
				t.Fatalf("reason: got %q (%v), want %q", got, err, wantReason)
			}
			if tok != want || ok != wantOK {
				t.Errorf("got (%q, %v), want (%q, %v)", tok, ok, want, wantOK)
			}
		})
	}
}

func FuzzCredential(f *testing.F) {
	for _, tc := range loadCredentialCases(f) {
		var a1, a2 string
		if len(tc.Authorization) > 0 {
			a1 = tc.Authorization[0]
		}
		if len(tc.Authorization) > 1 {
			a2 = tc.Authorization[1]
		}
		f.Add(len(tc.Authorization), a1, a2, tc.Cookie)
	}
	f.Fuzz(func(t *testing.T, nauth int, a1, a2, cookie string) {
		var auth []string
		switch {
		case nauth == 1:
			auth = []string{a1}
		case nauth >= 2:
			auth = []string{a1, a2}
		}
		r := credentialRequest(auth, cookie)
		tok, ok, err := authn.Credential(r)
		if err != nil {
			if tok != "" || ok {
				t.Fatalf("got (%q, %v) with error %v", tok, ok, err)
			}
			if authn.Reason(err) != authn.ReasonMalformed {
				t.Fatalf("reason: got %q, want malformed", authn.Reason(err))
			}
			return
		}
		if !ok {
			if tok != "" {
				t.Fatalf("got token %q with ok=false", tok)
			}
			return
		}
		if tok == "" || len(tok) > authn.MaxCredentialSize {
			t.Fatalf("got token of length %d", len(tok))
		}
		if strings.ContainsAny(tok, " \t\r\n,;\"") {
			t.Fatalf("token %q has a separator", tok)
		}
		if len(auth) > 1 {
			t.Fatalf("accepted %d Authorization headers", len(auth))
		}
		if len(auth) == 1 && !strings.Contains(auth[0], tok) {
			t.Fatalf("token %q not from the Authorization header %q", tok, auth[0])
		}
		if len(auth) == 0 && !strings.Contains(cookie, tok) {
			t.Fatalf("token %q not from the cookie %q", tok, cookie)
		}
	})
}

func BenchmarkCredential(b *testing.B) {
	r := credentialRequest([]string{"Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln"}, "a=b")
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := authn.Credential(r); err != nil {
			b.Fatal(err)
		}
	}
}
