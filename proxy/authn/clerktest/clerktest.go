// Package clerktest is a local fake of the part of Clerk's Backend API that
// moltgate uses: the JSON Web Key Set endpoint (GET /v1/jwks) and session reads
// (GET /v1/sessions/{id}, see [Server.EndSession]). It also mints
// Clerk-shaped session tokens signed with the keys it serves, and forges the
// bad tokens that a verifier must refuse.
//
// The fake is an [httptest.Server]: point the real clerk-sdk-go client at
// [Server.URL] with [Server.SecretKey]. Like Clerk it answers 401 with a Clerk
// error body unless the request carries "Authorization: Bearer <secret key>".
// Faults are injected with [Server.SetFail] and [Server.SetDelay], and
// [Server.Fetches] counts JWKS requests so tests can prove a verifier does not
// hammer the API.
//
// Use [New] in tests and [NewServer] plus [Server.Close] in programs (the
// end-to-end harness).
package clerktest

import (
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// DefaultIssuer is the iss of minted tokens. clerk-sdk-go refuses issuers
// that do not start with "https://clerk." (unless configured otherwise), so
// the fake uses a Clerk-shaped one.
const DefaultIssuer = "https://clerk.example.test"

// DefaultAuthorizedParty is the azp of minted tokens: the origin of the
// frontend that the session belongs to.
const DefaultAuthorizedParty = "https://app.example.test"

// Default claim values of minted tokens.
const (
	DefaultSubject   = "user_2test"
	DefaultSessionID = "sess_2test"
	// DefaultLifetime is the exp-iat of minted tokens. Clerk's real
	// session tokens live 60 s; 5 min keeps slow tests away from the edge.
	DefaultLifetime = 5 * time.Minute
)

// keyBits is the size of generated RSA keys, the size Clerk uses.
const keyBits = 2048

// Server is a fake Clerk Backend API. Its methods are safe for concurrent
// use.
type Server struct {
	// URL is the Backend API base URL including "/v1", as
	// clerk.BackendConfig.URL expects it.
	URL string

	srv    *httptest.Server
	secret string
	issuer string

	mu      sync.Mutex
	current *signingKey   // signs minted tokens
	served  []*signingKey // published in the JWKS, current first
	rogue   *signingKey   // never published; lazily made by forging helpers
	fail    int           // status to answer JWKS requests with; 0: serve keys
	delay   time.Duration // stall before answering a JWKS request
	fetches int           // JWKS requests seen, including refused ones

	ended       map[string]string // session id → status other than active (revoked, ended, …)
	sessionFail int               // status to answer session reads with; 0: answer
	sessionGets int               // session reads seen

	tb testing.TB // nil for NewServer
}

type signingKey struct {
	kid  string
	priv *rsa.PrivateKey
}

// New starts a fake Clerk server for a test and closes it when the test
// ends. It fails the test if the server cannot start.
func New(tb testing.TB) *Server {
	tb.Helper()
	s, err := NewServer()
	if err != nil {
		tb.Fatalf("clerktest: %v", err)
	}
	s.tb = tb
	tb.Cleanup(s.Close)
	return s
}

// NewServer starts a fake Clerk server outside of a test. The caller must
// call [Server.Close].
func NewServer() (*Server, error) {
	key, err := newSigningKey()
	if err != nil {
		return nil, err
	}
	secret, err := randomHex(24)
	if err != nil {
		return nil, err
	}
	s := &Server{
		secret:  "sk_test_" + secret,
		issuer:  DefaultIssuer,
		current: key,
		served:  []*signingKey{key},
		ended:   map[string]string{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/jwks", s.handleJWKS)
	mux.HandleFunc("GET /v1/sessions/{id}", s.handleSession)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "resource_not_found", "Resource not found")
	})
	s.srv = httptest.NewServer(mux)
	s.URL = s.srv.URL + "/v1"
	return s, nil
}

// Close shuts the server down and blocks until outstanding requests end.
func (s *Server) Close() { s.srv.Close() }

// SecretKey returns the secret key ("sk_test_…") that JWKS requests must
// carry as a bearer token.
func (s *Server) SecretKey() string { return s.secret }

// Issuer returns the iss of minted tokens, [DefaultIssuer].
func (s *Server) Issuer() string { return s.issuer }

// KeyID returns the kid of the key that currently signs minted tokens.
func (s *Server) KeyID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current.kid
}

// Client returns an HTTP client for the fake's listener.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// RotateKey makes a new key current and returns its kid. With keepOld the
// previous keys are still published (tokens they signed keep verifying, as
// during Clerk's rotation overlap); without it only the new key is
// published. It fails the test (or returns "" from a NewServer fake) if a
// key cannot be generated.
func (s *Server) RotateKey(keepOld bool) string {
	key, err := newSigningKey()
	if err != nil {
		s.fatalf("rotate key: %v", err)
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.current = key
	if keepOld {
		s.served = append([]*signingKey{key}, s.served...)
	} else {
		s.served = []*signingKey{key}
	}
	return key.kid
}

// SetFail makes JWKS requests fail with status (for example 429, 500, 503)
// and a Clerk error body. Zero restores normal service.
func (s *Server) SetFail(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = status
}

// SetDelay stalls every JWKS response by d, or until the client gives up.
// Zero removes the stall.
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// Fetches returns the number of JWKS requests received so far, including
// refused and failed ones.
func (s *Server) Fetches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetches
}

// EndSession gives session id the status (e.g. "revoked", "ended", "expired"): from now on
// GET /v1/sessions/{id} answers it. Every other session id is active.
func (s *Server) EndSession(id, status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended[id] = status
}

// SetSessionFail makes session reads answer status (e.g. 503); 0 restores them.
func (s *Server) SetSessionFail(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sessionFail = status
}

// SessionGets returns the number of session reads received so far.
func (s *Server) SessionGets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessionGets
}

// authorized: the request carries the secret key, as Clerk's Backend API requires.
func (s *Server) authorized(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(tok), []byte(s.secret)) == 1
}

// handleSession is GET /v1/sessions/{id}: Clerk's session object, with the status set by
// EndSession ("active" otherwise).
func (s *Server) handleSession(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r) {
		writeError(w, http.StatusUnauthorized, "authentication_invalid",
			"The provided Clerk Secret Key is invalid. Make sure that your Clerk Secret Key is correct.")
		return
	}
	id := r.PathValue("id")
	s.mu.Lock()
	s.sessionGets++
	fail, status := s.sessionFail, s.ended[id]
	s.mu.Unlock()
	if fail != 0 {
		writeError(w, fail, "internal_clerk_error", "injected failure")
		return
	}
	if status == "" {
		status = "active"
	}
	now := time.Now().Unix() * 1000
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"object": "session", "id": id, "client_id": "client_test",
		"user_id": DefaultSubject, "status": status, "last_active_at": now, "expire_at": now + 7*86400*1000,
		"abandon_at": now + 30*86400*1000, "created_at": now, "updated_at": now})
}

// jwk is one key in Clerk's JWKS response.
type jwk struct {
	Use string `json:"use"`
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
}

func (s *Server) handleJWKS(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.fetches++
	fail, delay := s.fail, s.delay
	keys := make([]jwk, 0, len(s.served))
	for _, k := range s.served {
		pub := &k.priv.PublicKey
		keys = append(keys, jwk{
			Use: "sig",
			Kty: "RSA",
			Kid: k.kid,
			Alg: "RS256",
			N:   b64(pub.N.Bytes()),
			E:   b64(big.NewInt(int64(pub.E)).Bytes()),
		})
	}
	s.mu.Unlock()

	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if r.Method != http.MethodGet {
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "Method not allowed")
		return
	}
	if !s.authorized(r) {
		writeError(w, http.StatusUnauthorized, "authentication_invalid",
			"The provided Clerk Secret Key is invalid. Make sure that your Clerk Secret Key is correct.")
		return
	}
	if fail != 0 {
		writeError(w, fail, "internal_clerk_error", "There was an internal error on our servers.")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"keys": keys})
}

// writeError writes Clerk's error body: {"errors":[…],"clerk_trace_id":…}.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"errors": []map[string]string{{
			"code":         code,
			"message":      msg,
			"long_message": msg,
		}},
		"clerk_trace_id": "trace_clerktest",
	})
}

// Org is an active organization in a session token.
type Org struct {
	ID          string // "org_…"
	Slug        string
	Role        string // v2: "admin" (the SDK prefixes "org:"); v1: "org:admin"
	Permissions string // v2 only: comma-separated permission names
}

// Claims describes a session token to mint. The zero value mints a valid
// Clerk v2 session token for [DefaultSubject] and [DefaultSessionID] that
// lives [DefaultLifetime] from now.
type Claims struct {
	Subject         string // sub; default DefaultSubject
	SessionID       string // sid; default DefaultSessionID
	AuthorizedParty string // azp; default DefaultAuthorizedParty
	Issuer          string // iss; default Server.Issuer()

	IssuedAt  time.Time // iat; default now
	NotBefore time.Time // nbf; default IssuedAt
	Expiry    time.Time // exp; default IssuedAt + DefaultLifetime

	OmitExpiry          bool // no exp claim (a verifier must refuse it)
	OmitSessionID       bool // no sid claim: a JWT-template token, not a session
	OmitAuthorizedParty bool // no azp claim

	// Version is the session token version "v": 2 (default) puts Org in
	// the "o" claim, 1 in the legacy org_id/org_role/org_slug claims.
	Version int
	// Org is the active organization; nil: none.
	Org *Org
	// FactorAges is the fva claim: minutes since first and second factor
	// verification, -1 for never. nil omits it.
	FactorAges []int
	// KeyID overrides the header kid; default the current key's kid. The
	// token is still signed with the current key.
	KeyID string
	// Extra claims are added last and override the ones above.
	Extra map[string]any
}

// Sign mints a session token signed RS256 with the current key.
func (s *Server) Sign(c Claims) (string, error) {
	s.mu.Lock()
	key := s.current
	s.mu.Unlock()
	kid := c.KeyID
	if kid == "" {
		kid = key.kid
	}
	return signRS256(key.priv, kid, s.payload(c))
}

// Mint is [Server.Sign] for tests. Signing fails only when Extra holds a
// value that cannot be marshalled to JSON, a bug in the test: Mint then
// fails the test (New) or panics (NewServer), as httptest.NewServer does
// when it cannot listen.
func (s *Server) Mint(c Claims) string {
	tok, err := s.Sign(c)
	if err != nil {
		s.fatalf("mint: %v", err)
	}
	return tok
}

// ForgeAlgNone returns an unsigned token with header alg "none" and the
// current kid.
func (s *Server) ForgeAlgNone(c Claims) string {
	hdr := map[string]any{"alg": "none", "kid": s.KeyID(), "typ": "JWT"}
	return s.encode(hdr, c) + "."
}

// ForgeHS256WithPublicKey returns a token with header alg "HS256" whose
// HMAC key is the PEM encoding of the current RSA public key: the
// algorithm-confusion attack on verifiers that let the token pick the
// algorithm.
func (s *Server) ForgeHS256WithPublicKey(c Claims) string {
	s.mu.Lock()
	key := s.current
	s.mu.Unlock()
	der, err := x509.MarshalPKIXPublicKey(&key.priv.PublicKey)
	if err != nil {
		s.fatalf("forge: %v", err)
		return ""
	}
	secret := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	hdr := map[string]any{"alg": "HS256", "kid": key.kid, "typ": "JWT"}
	input := s.encode(hdr, c)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(input))
	return input + "." + b64(mac.Sum(nil))
}

// ForgeUnknownKey returns a token signed RS256 by a key the JWKS never
// publishes, under that key's own (unknown) kid.
func (s *Server) ForgeUnknownKey(c Claims) string {
	rogue := s.rogueKey()
	if rogue == nil {
		return ""
	}
	return s.mustSign(rogue.priv, rogue.kid, c)
}

// ForgeForeignKey returns a token signed RS256 by a key the JWKS never
// publishes but claiming the current, published kid: a verifier must find
// the signature bad.
func (s *Server) ForgeForeignKey(c Claims) string {
	rogue := s.rogueKey()
	if rogue == nil {
		return ""
	}
	return s.mustSign(rogue.priv, s.KeyID(), c)
}

// ForgeWrongKid returns a token signed by the current key but naming a
// random kid that the JWKS does not publish.
func (s *Server) ForgeWrongKid(c Claims) string {
	kid, err := randomHex(8)
	if err != nil {
		s.fatalf("forge: %v", err)
		return ""
	}
	c.KeyID = "ins_" + kid
	return s.Mint(c)
}

// Tamper decodes token's payload, lets mutate change the claims, and
// re-encodes it keeping the original header and signature.
func Tamper(token string, mutate func(claims map[string]any)) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", errors.New("clerktest: tamper: not a compact JWS")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", fmt.Errorf("clerktest: tamper: %w", err)
	}
	claims := map[string]any{}
	if err := json.Unmarshal(raw, &claims); err != nil {
		return "", fmt.Errorf("clerktest: tamper: %w", err)
	}
	mutate(claims)
	raw, err = json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("clerktest: tamper: %w", err)
	}
	return parts[0] + "." + b64(raw) + "." + parts[2], nil
}

// payload builds the claims map of c with defaults applied.
func (s *Server) payload(c Claims) map[string]any {
	iat := c.IssuedAt
	if iat.IsZero() {
		iat = time.Now()
	}
	nbf := c.NotBefore
	if nbf.IsZero() {
		nbf = iat
	}
	exp := c.Expiry
	if exp.IsZero() {
		exp = iat.Add(DefaultLifetime)
	}
	m := map[string]any{
		"iss": or(c.Issuer, s.issuer),
		"sub": or(c.Subject, DefaultSubject),
		"iat": iat.Unix(),
		"nbf": nbf.Unix(),
	}
	if !c.OmitExpiry {
		m["exp"] = exp.Unix()
	}
	if !c.OmitSessionID {
		m["sid"] = or(c.SessionID, DefaultSessionID)
	}
	if !c.OmitAuthorizedParty {
		m["azp"] = or(c.AuthorizedParty, DefaultAuthorizedParty)
	}
	version := c.Version
	if version == 0 {
		version = 2
	}
	if version >= 2 {
		m["v"] = version
	}
	if o := c.Org; o != nil {
		if version >= 2 {
			m["o"] = map[string]any{"id": o.ID, "slg": o.Slug, "rol": o.Role, "per": o.Permissions}
		} else {
			m["org_id"], m["org_slug"], m["org_role"] = o.ID, o.Slug, o.Role
		}
	}
	if c.FactorAges != nil {
		m["fva"] = c.FactorAges
	}
	for k, v := range c.Extra {
		m[k] = v
	}
	return m
}

// encode returns the JWS signing input "b64(header).b64(payload)" for c.
// Marshalling can fail only for Extra values; the failure is reported like
// Mint's.
func (s *Server) encode(hdr map[string]any, c Claims) string {
	h, err := json.Marshal(hdr)
	if err != nil {
		s.fatalf("encode header: %v", err)
		return ""
	}
	p, err := json.Marshal(s.payload(c))
	if err != nil {
		s.fatalf("encode claims: %v", err)
		return ""
	}
	return b64(h) + "." + b64(p)
}

func (s *Server) mustSign(priv *rsa.PrivateKey, kid string, c Claims) string {
	tok, err := signRS256(priv, kid, s.payload(c))
	if err != nil {
		s.fatalf("sign: %v", err)
	}
	return tok
}

func signRS256(priv *rsa.PrivateKey, kid string, claims map[string]any) (string, error) {
	h, err := json.Marshal(map[string]any{"alg": "RS256", "kid": kid, "typ": "JWT"})
	if err != nil {
		return "", fmt.Errorf("clerktest: sign: %w", err)
	}
	p, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("clerktest: sign: %w", err)
	}
	input := b64(h) + "." + b64(p)
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(nil, priv, crypto.SHA256, sum[:])
	if err != nil {
		return "", fmt.Errorf("clerktest: sign: %w", err)
	}
	return input + "." + b64(sig), nil
}

func (s *Server) rogueKey() *signingKey {
	s.mu.Lock()
	rogue := s.rogue
	s.mu.Unlock()
	if rogue != nil {
		return rogue
	}
	k, err := newSigningKey()
	if err != nil {
		s.fatalf("rogue key: %v", err)
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rogue == nil {
		s.rogue = k
	}
	return s.rogue
}

// fatalf reports a failure of a helper: it fails the test for a New fake
// and panics for a NewServer fake (a bug in the calling program).
func (s *Server) fatalf(format string, args ...any) {
	if s.tb != nil {
		s.tb.Helper()
		s.tb.Fatalf("clerktest: "+format, args...)
		return
	}
	panic(fmt.Sprintf("clerktest: "+format, args...))
}

func newSigningKey() (*signingKey, error) {
	priv, err := rsa.GenerateKey(rand.Reader, keyBits)
	if err != nil {
		return nil, fmt.Errorf("clerktest: generate key: %w", err)
	}
	id, err := randomHex(12)
	if err != nil {
		return nil, err
	}
	return &signingKey{kid: "ins_" + id, priv: priv}, nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("clerktest: random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
