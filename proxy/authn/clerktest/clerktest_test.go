package clerktest_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/clerk/clerk-sdk-go/v2"
	"github.com/clerk/clerk-sdk-go/v2/jwks"
	"github.com/clerk/clerk-sdk-go/v2/jwt"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
)

func jwksClient(srv *clerktest.Server, key string) *jwks.Client {
	return jwks.NewClient(&clerk.ClientConfig{BackendConfig: clerk.BackendConfig{
		URL:        clerk.String(srv.URL),
		Key:        clerk.String(key),
		HTTPClient: srv.Client(),
	}})
}

func TestJWKSWithSDK(t *testing.T) {
	t.Parallel()
	srv := clerktest.New(t)
	set, err := jwksClient(srv, srv.SecretKey()).Get(t.Context(), &jwks.GetParams{})
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if len(set.Keys) != 1 {
		t.Fatalf("keys: got %d, want 1", len(set.Keys))
	}
	k := set.Keys[0]
	if k.KeyID != srv.KeyID() || k.Algorithm != "RS256" || k.Use != "sig" || k.Key == nil {
		t.Errorf("key: got kid %q alg %q use %q key %T", k.KeyID, k.Algorithm, k.Use, k.Key)
	}
	if got := srv.Fetches(); got != 1 {
		t.Errorf("Fetches: got %d, want 1", got)
	}
}

func TestJWKSRequiresSecretKey(t *testing.T) {
	t.Parallel()
	srv := clerktest.New(t)
	_, err := jwksClient(srv, "sk_test_wrong").Get(t.Context(), &jwks.GetParams{})
	var apiErr *clerk.APIErrorResponse
	if !errors.As(err, &apiErr) {
		t.Fatalf("got %v, want *clerk.APIErrorResponse", err)
	}
	if apiErr.HTTPStatusCode != http.StatusUnauthorized || len(apiErr.Errors) != 1 ||
		apiErr.Errors[0].Code != "authentication_invalid" {
		t.Errorf("got %+v, want 401 authentication_invalid", apiErr)
	}
}

func TestSetFail(t *testing.T) {
	t.Parallel()
	srv := clerktest.New(t)
	srv.SetFail(http.StatusTooManyRequests)
	_, err := jwksClient(srv, srv.SecretKey()).Get(t.Context(), &jwks.GetParams{})
	var apiErr *clerk.APIErrorResponse
	if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != http.StatusTooManyRequests {
		t.Fatalf("got %v, want a 429 API error", err)
	}
	srv.SetFail(0)
	if _, err := jwksClient(srv, srv.SecretKey()).Get(t.Context(), &jwks.GetParams{}); err != nil {
		t.Fatalf("after SetFail(0): %v", err)
	}
	if got := srv.Fetches(); got != 2 {
		t.Errorf("Fetches: got %d, want 2", got)
	}
}

func TestSetDelay(t *testing.T) {
	t.Parallel()
	srv := clerktest.New(t)
	srv.SetDelay(time.Hour)
	hc := srv.Client()
	hc.Timeout = 50 * time.Millisecond
	c := jwks.NewClient(&clerk.ClientConfig{BackendConfig: clerk.BackendConfig{
		URL: clerk.String(srv.URL), Key: clerk.String(srv.SecretKey()), HTTPClient: hc,
	}})
	if _, err := c.Get(t.Context(), &jwks.GetParams{}); err == nil {
		t.Fatal("got nil, want a timeout")
	}
}

func TestMintVerifiesWithSDK(t *testing.T) {
	t.Parallel()
	srv := clerktest.New(t)
	tok := srv.Mint(clerktest.Claims{
		Org:        &clerktest.Org{ID: "org_1", Slug: "acme", Role: "admin"},
		FactorAges: []int{2, -1},
	})
	claims, err := jwt.Verify(t.Context(), &jwt.VerifyParams{
		Token:      tok,
		JWKSClient: jwksClient(srv, srv.SecretKey()),
	})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if claims.Subject != clerktest.DefaultSubject || claims.SessionID != clerktest.DefaultSessionID ||
		claims.AuthorizedParty != clerktest.DefaultAuthorizedParty || claims.Issuer != srv.Issuer() {
		t.Errorf("claims: got %+v", claims)
	}
	if claims.ActiveOrganizationID != "org_1" || claims.ActiveOrganizationRole != "org:admin" {
		t.Errorf("org: got %q %q, want org_1 org:admin", claims.ActiveOrganizationID, claims.ActiveOrganizationRole)
	}
	if claims.FactorVerificationAge != [2]int64{2, -1} {
		t.Errorf("fva: got %v, want [2 -1]", claims.FactorVerificationAge)
	}
	if claims.Expiry == nil || claims.IssuedAt == nil || *claims.Expiry-*claims.IssuedAt != int64(clerktest.DefaultLifetime/time.Second) {
		t.Errorf("exp-iat: got %v %v", claims.Expiry, claims.IssuedAt)
	}
}

func TestMintOptions(t *testing.T) {
	t.Parallel()
	srv := clerktest.New(t)
	tok := srv.Mint(clerktest.Claims{OmitExpiry: true, OmitSessionID: true, OmitAuthorizedParty: true, Version: 1,
		Org: &clerktest.Org{ID: "org_1", Role: "org:member"}, Extra: map[string]any{"custom": 1}})
	claims := decodePayload(t, tok)
	for _, absent := range []string{"exp", "sid", "azp", "v", "o"} {
		if _, ok := claims[absent]; ok {
			t.Errorf("claim %q: present, want absent", absent)
		}
	}
	if claims["org_id"] != "org_1" || claims["org_role"] != "org:member" || claims["custom"] != float64(1) {
		t.Errorf("claims: got %v", claims)
	}
}

func TestRotateKey(t *testing.T) {
	t.Parallel()
	srv := clerktest.New(t)
	old := srv.KeyID()
	kid := srv.RotateKey(true)
	if kid == old || srv.KeyID() != kid {
		t.Fatalf("kid after rotation: got %q (old %q)", srv.KeyID(), old)
	}
	c := jwksClient(srv, srv.SecretKey())
	if got := kids(t, c); strings.Join(got, ",") != kid+","+old {
		t.Errorf("served kids with keepOld: got %v, want [%s %s]", got, kid, old)
	}
	newer := srv.RotateKey(false)
	if got := kids(t, c); len(got) != 1 || got[0] != newer {
		t.Errorf("served kids without keepOld: got %v, want [%s]", got, newer)
	}
	if h := decodeHeader(t, srv.Mint(clerktest.Claims{})); h["kid"] != newer || h["alg"] != "RS256" {
		t.Errorf("header: got %v", h)
	}
}

func TestForgeries(t *testing.T) {
	t.Parallel()
	srv := clerktest.New(t)
	tests := []struct {
		name    string
		tok     string
		wantAlg string
		wantKid func(kid string) bool
	}{
		{"alg none", srv.ForgeAlgNone(clerktest.Claims{}), "none", func(k string) bool { return k == srv.KeyID() }},
		{"hs256", srv.ForgeHS256WithPublicKey(clerktest.Claims{}), "HS256", func(k string) bool { return k == srv.KeyID() }},
		{"unknown key", srv.ForgeUnknownKey(clerktest.Claims{}), "RS256", func(k string) bool { return k != srv.KeyID() }},
		{"foreign key", srv.ForgeForeignKey(clerktest.Claims{}), "RS256", func(k string) bool { return k == srv.KeyID() }},
		{"wrong kid", srv.ForgeWrongKid(clerktest.Claims{}), "RS256", func(k string) bool { return k != srv.KeyID() }},
	}
	c := jwksClient(srv, srv.SecretKey())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := decodeHeader(t, tt.tok)
			if h["alg"] != tt.wantAlg || !tt.wantKid(h["kid"].(string)) {
				t.Errorf("header: got %v", h)
			}
			if _, err := jwt.Verify(t.Context(), &jwt.VerifyParams{Token: tt.tok, JWKSClient: c}); err == nil {
				t.Error("SDK verified a forgery")
			}
		})
	}
}

func TestNewServerStandalone(t *testing.T) {
	t.Parallel()
	srv, err := clerktest.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if _, err := jwksClient(srv, srv.SecretKey()).Get(t.Context(), &jwks.GetParams{}); err != nil {
		t.Fatalf("Get: %v", err)
	}
	if tok, err := srv.Sign(clerktest.Claims{}); err != nil || tok == "" {
		t.Fatalf("Sign: %q, %v", tok, err)
	}
	if _, err := srv.Sign(clerktest.Claims{Extra: map[string]any{"bad": func() {}}}); err == nil {
		t.Error("Sign with an unmarshallable claim: got nil, want error")
	}
}

func TestTamper(t *testing.T) {
	t.Parallel()
	srv := clerktest.New(t)
	tok := srv.Mint(clerktest.Claims{})
	tampered, err := clerktest.Tamper(tok, func(c map[string]any) { c["sub"] = "user_admin" })
	if err != nil {
		t.Fatal(err)
	}
	if decodePayload(t, tampered)["sub"] != "user_admin" {
		t.Error("sub not changed")
	}
	if tok[strings.LastIndexByte(tok, '.'):] != tampered[strings.LastIndexByte(tampered, '.'):] {
		t.Error("signature changed")
	}
	if _, err := clerktest.Tamper("x", func(map[string]any) {}); err == nil {
		t.Error("Tamper(garbage): got nil, want error")
	}
}

func kids(t *testing.T, c *jwks.Client) []string {
	t.Helper()
	set, err := c.Get(t.Context(), &jwks.GetParams{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.KeyID)
	}
	return out
}

func decodeHeader(t *testing.T, tok string) map[string]any {
	t.Helper()
	return decodeSegment(t, strings.Split(tok, ".")[0])
}

func decodePayload(t *testing.T, tok string) map[string]any {
	t.Helper()
	return decodeSegment(t, strings.Split(tok, ".")[1])
}

func decodeSegment(t *testing.T, seg string) map[string]any {
	t.Helper()
	dec, err := jwtB64(seg)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(dec, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func jwtB64(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
