package authn

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/clerk/clerk-sdk-go/v2"
	"github.com/clerk/clerk-sdk-go/v2/jwks"
	"github.com/clerk/clerk-sdk-go/v2/jwt"
	"github.com/clerk/clerk-sdk-go/v2/session"
	jose "github.com/go-jose/go-jose/v3"
	josejwt "github.com/go-jose/go-jose/v3/jwt"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of ClerkConfig.
const (
	DefaultClerkAPIURL        = "https://api.clerk.com/v1"
	DefaultLeeway             = 5 * time.Second
	DefaultMinRefreshInterval = 30 * time.Second
	DefaultCacheSize          = 10_000
	// cacheTTL is how long a verification is reused: the longest a token
	// signed by a key that Clerk has since withdrawn keeps working.
	cacheTTL = time.Minute
	// maxLeeway bounds the configurable clock-skew allowance.
	maxLeeway = 5 * time.Minute
)

// ClerkConfig configures the verification of Clerk session tokens.
type ClerkConfig struct {
	// APIURL is the Clerk Backend API base including "/v1", from which
	// the JWKS is fetched (GET <APIURL>/jwks). Default
	// DefaultClerkAPIURL.
	APIURL string
	// SecretKey is the instance's secret key ("sk_live_…"), sent to the
	// Backend API. Required. Never logged.
	SecretKey string
	// Issuer is the exact iss of the instance's session tokens, for
	// example "https://clerk.example.com". Required; an https URL.
	Issuer string
	// AuthorizedParties are the origins allowed in azp, for example
	// "https://app.example.com". Required; a token without azp is
	// refused: a session minted for another site must not be replayed
	// here.
	AuthorizedParties []string
	// Leeway is the clock skew tolerated on exp, nbf and iat. Default
	// DefaultLeeway (5 s); at most 5 min.
	Leeway time.Duration
	// MinRefreshInterval is the minimum time between JWKS fetches caused
	// by tokens naming an unknown kid. Default DefaultMinRefreshInterval
	// (30 s). After a failed fetch the next may come after
	// min(MinRefreshInterval, 5 s).
	MinRefreshInterval time.Duration
	// CacheSize is the number of verified tokens remembered (by hash) so
	// that repeated requests skip the RSA verification. Default
	// DefaultCacheSize (10,000); negative disables the cache.
	CacheSize int
	// HTTPClient makes the Backend API requests. Default: a client with a
	// 10 s timeout. Response bodies are capped at 1 MiB either way.
	HTTPClient *http.Client
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// String describes the configuration with the secret key redacted.
func (cfg ClerkConfig) String() string {
	return fmt.Sprintf("{APIURL:%s SecretKey:%s Issuer:%s AuthorizedParties:%v Leeway:%s MinRefreshInterval:%s CacheSize:%d}",
		cfg.APIURL, redact(cfg.SecretKey), cfg.Issuer, cfg.AuthorizedParties, cfg.Leeway, cfg.MinRefreshInterval, cfg.CacheSize)
}

// LogValue logs the configuration with the secret key redacted.
func (cfg ClerkConfig) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("api_url", cfg.APIURL),
		slog.String("secret_key", redact(cfg.SecretKey)),
		slog.String("issuer", cfg.Issuer),
		slog.Any("authorized_parties", cfg.AuthorizedParties),
		slog.Duration("leeway", cfg.Leeway),
		slog.Duration("min_refresh_interval", cfg.MinRefreshInterval),
		slog.Int("cache_size", cfg.CacheSize),
	)
}

func redact(secret string) string {
	if secret == "" {
		return ""
	}
	return "[redacted]"
}

// validate reports every problem of cfg at once.
func (cfg ClerkConfig) validate() error {
	var errs []error
	if u, err := url.Parse(cfg.APIURL); cfg.APIURL != "" &&
		(err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "") {
		errs = append(errs, errors.New("api_url: not an http(s) URL"))
	}
	if cfg.SecretKey == "" {
		errs = append(errs, errors.New("secret_key: empty"))
	}
	if cfg.Issuer == "" {
		errs = append(errs, errors.New("issuer: empty"))
	} else if u, err := url.Parse(cfg.Issuer); err != nil || u.Scheme != "https" || u.Host == "" {
		errs = append(errs, errors.New("issuer: not an https URL"))
	}
	if len(cfg.AuthorizedParties) == 0 {
		errs = append(errs, errors.New("authorized_parties: empty"))
	}
	for i, p := range cfg.AuthorizedParties {
		if p == "" {
			errs = append(errs, fmt.Errorf("authorized_parties[%d]: empty", i))
		}
	}
	if cfg.Leeway < 0 || cfg.Leeway > maxLeeway {
		errs = append(errs, fmt.Errorf("leeway: %s not within [0, %s]", cfg.Leeway, maxLeeway))
	}
	if cfg.MinRefreshInterval < 0 {
		errs = append(errs, fmt.Errorf("min_refresh_interval: %s negative", cfg.MinRefreshInterval))
	}
	return errors.Join(errs...)
}

// Clerk verifies Clerk session tokens against the instance's JWKS. It is
// safe for concurrent use and starts no goroutines.
type Clerk struct {
	issuer  string
	parties map[string]struct{}
	leeway  time.Duration
	now     func() time.Time
	clock   clerk.Clock
	keys    *keySet
	cache   *tokenCache
	metrics *metrics
	// sessions reads session objects from the Backend API (Active).
	sessions *session.Client
}

// NewClerk returns a verifier for cfg. It does not contact Clerk: the JWKS
// is fetched on first use (or by [Clerk.Refresh]). Metrics are registered
// on reg unless it is nil; logger may be nil.
func NewClerk(cfg ClerkConfig, logger *slog.Logger, reg prometheus.Registerer) (*Clerk, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("authn: clerk config: %w", err)
	}
	if cfg.APIURL == "" {
		cfg.APIURL = DefaultClerkAPIURL
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = DefaultLeeway
	}
	if cfg.MinRefreshInterval == 0 {
		cfg.MinRefreshInterval = DefaultMinRefreshInterval
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	hc := &http.Client{Timeout: fetchTimeout}
	if cfg.HTTPClient != nil {
		c := *cfg.HTTPClient
		hc = &c
	}
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	hc.Transport = limitBody{base: base}

	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	parties := make(map[string]struct{}, len(cfg.AuthorizedParties))
	for _, p := range cfg.AuthorizedParties {
		parties[p] = struct{}{}
	}
	c := &Clerk{
		issuer:  cfg.Issuer,
		parties: parties,
		leeway:  cfg.Leeway,
		now:     cfg.Now,
		clock:   clockFunc(cfg.Now),
		cache:   newTokenCache(cfg.CacheSize, cacheTTL),
		metrics: m,
		sessions: session.NewClient(&clerk.ClientConfig{BackendConfig: clerk.BackendConfig{
			URL:        clerk.String(cfg.APIURL),
			Key:        clerk.String(cfg.SecretKey),
			HTTPClient: hc,
		}}),
		keys: &keySet{
			client: jwks.NewClient(&clerk.ClientConfig{BackendConfig: clerk.BackendConfig{
				URL:        clerk.String(cfg.APIURL),
				Key:        clerk.String(cfg.SecretKey),
				HTTPClient: hc,
			}}),
			now:      cfg.Now,
			interval: cfg.MinRefreshInterval,
			backoff:  min(cfg.MinRefreshInterval, maxFailureBackoff),
			logger:   logger.With(slog.String("component", "authn")),
			metrics:  m,
			fetching: make(chan struct{}, 1),
		},
	}
	return c, nil
}

// Refresh fetches the JWKS now, regardless of the refresh interval: for
// warming the key cache at start-up and for readiness checks. It fails
// with ErrKeysUnavailable.
func (c *Clerk) Refresh(ctx context.Context) error {
	return c.keys.refresh(ctx)
}

// Verify verifies a Clerk session token and returns the session's identity
// (Kind KindUser). It fails with an *Error whose Reason says why; the
// reason is ReasonKeysUnavailable when the JWKS cannot be fetched (a
// server-side failure: 503, not 401).
//
// Beyond what clerk-sdk-go checks (signature, exp/nbf/iat, azp through the
// handler), Verify refuses a header alg other than RS256 before any key is
// used, a token without exp, without sid or without sub, and any iss but
// the configured one.
func (c *Clerk) Verify(ctx context.Context, token string) (Identity, error) {
	if token == "" || len(token) > MaxCredentialSize {
		return Identity{}, fail(ReasonMalformed, errors.New("token size"))
	}
	now := c.now()
	h := hashString(token)
	switch id, res := c.cache.get(h, now, c.leeway); res {
	case cacheHit:
		c.metrics.cacheHits.Inc()
		return id, nil
	case cacheExpired:
		return Identity{}, fail(ReasonExpired, nil)
	}
	c.metrics.cacheMisses.Inc()

	kid, err := checkHeader(token)
	if err != nil {
		return Identity{}, err
	}
	key, err := c.keys.get(ctx, kid)
	if err != nil {
		return Identity{}, err
	}
	id, err := c.verify(ctx, token, key)
	if err != nil {
		return Identity{}, err
	}
	c.cache.put(h, id, now)
	return id, nil
}

// verify checks token's signature with key and its claims.
func (c *Clerk) verify(ctx context.Context, token string, key *clerk.JSONWebKey) (Identity, error) {
	var extra extraClaims
	claims, err := jwt.Verify(ctx, &jwt.VerifyParams{
		Token:                   token,
		JWK:                     key,
		Clock:                   c.clock,
		Leeway:                  c.leeway,
		CustomClaimsConstructor: func(context.Context) any { return &extra },
		// With ProxyURL set, the SDK requires iss to equal it exactly
		// instead of accepting any "https://clerk.…" issuer: the exact
		// issuer check this verifier needs, and it also admits Clerk
		// instances behind a proxy or custom domain.
		ProxyURL:               &c.issuer,
		AuthorizedPartyHandler: c.authorizedParty,
	})
	if err != nil {
		return Identity{}, c.classify(err, &extra)
	}
	// Checks the SDK does, repeated so that a change in it cannot open a
	// hole, and checks it does not do.
	switch {
	case claims.Issuer != c.issuer:
		return Identity{}, fail(ReasonWrongIssuer, nil)
	case !c.authorizedParty(claims.AuthorizedParty):
		return Identity{}, fail(ReasonWrongAudience, nil)
	case claims.Expiry == nil:
		// A token without exp would be valid forever.
		return Identity{}, fail(ReasonNoExpiry, nil)
	case claims.SessionID == "":
		// JWT templates are signed with the same keys but are not
		// sessions: they cannot be revoked by signing out.
		return Identity{}, fail(ReasonNoSession, nil)
	case claims.Subject == "":
		return Identity{}, fail(ReasonMalformed, errors.New("no sub claim"))
	case extra.FactorAges != nil && len(extra.FactorAges) != 2:
		return Identity{}, fail(ReasonMalformed, errors.New("fva claim is not a pair"))
	}
	id := Identity{
		Kind:       KindUser,
		UserID:     claims.Subject,
		SessionID:  claims.SessionID,
		OrgID:      claims.ActiveOrganizationID,
		OrgRole:    claims.ActiveOrganizationRole,
		FactorAges: extra.FactorAges,
		Expires:    time.Unix(*claims.Expiry, 0),
	}
	// v2 tokens carry the organization in "o"; the SDK reads it only
	// when "v" is 2. Prefer it whenever present, else the v1 claims.
	if o := extra.Org; o != nil && o.ID != "" {
		id.OrgID, id.OrgRole = o.ID, ""
		if o.Role != "" {
			id.OrgRole = "org:" + strings.TrimPrefix(o.Role, "org:")
		}
	}
	return id, nil
}

// classify turns an error of jwt.Verify into an *Error. extra.verified
// tells whether the signature was good (go-jose decodes claims only after
// verifying it), which separates forgeries from valid tokens whose claims
// are refused. The SDK's own messages are not kept: some echo claims.
func (c *Clerk) classify(err error, extra *extraClaims) error {
	if !extra.verified {
		if errors.Is(err, jose.ErrCryptoFailure) {
			return fail(ReasonBadSignature, nil)
		}
		return fail(ReasonMalformed, errors.New("unparsable token"))
	}
	switch {
	case errors.Is(err, josejwt.ErrExpired):
		return fail(ReasonExpired, nil)
	case errors.Is(err, josejwt.ErrNotValidYet), errors.Is(err, josejwt.ErrIssuedInTheFuture):
		return fail(ReasonNotYetValid, nil)
	case extra.Issuer != c.issuer:
		return fail(ReasonWrongIssuer, nil)
	case !c.authorizedParty(extra.AuthorizedParty):
		return fail(ReasonWrongAudience, nil)
	}
	return fail(ReasonMalformed, errors.New("invalid claims"))
}

// authorizedParty is the SDK's azp check. An empty azp is refused.
func (c *Clerk) authorizedParty(azp string) bool {
	_, ok := c.parties[azp]
	return ok && azp != ""
}

// extraClaims are the claims read beyond clerk.SessionClaims.
type extraClaims struct {
	// verified is set when the claims are decoded, which go-jose does
	// only after the signature verified.
	verified        bool
	Issuer          string `json:"iss"`
	AuthorizedParty string `json:"azp"`
	Org             *struct {
		ID   string `json:"id"`
		Role string `json:"rol"`
	} `json:"o"`
	// FactorAges is fva; [2]int64 in the SDK, which turns a missing
	// claim into [0, 0], "verified just now". nil here when missing.
	FactorAges []int `json:"fva"`
}

func (e *extraClaims) UnmarshalJSON(b []byte) error {
	type plain extraClaims // without this method
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	p.verified = true
	*e = extraClaims(p)
	return nil
}

// checkHeader checks that token is a compact JWS (three base64url
// segments) whose header names alg RS256, and returns its kid. Refusing
// other algs here, before any key is touched, stops alg "none" and the
// HS256-with-the-RSA-public-key confusion even if a library below would
// let the token choose its algorithm.
func checkHeader(token string) (kid string, err error) {
	hdr, rest, _ := strings.Cut(token, ".")
	payload, sig, ok := strings.Cut(rest, ".")
	// sig may be empty only in an alg "none" token, which is refused
	// below with its own reason.
	if !ok || !isB64URL(hdr) || !isB64URL(payload) || (sig != "" && !isB64URL(sig)) {
		return "", fail(ReasonMalformed, errors.New("not a compact JWS"))
	}
	raw, err := base64.RawURLEncoding.DecodeString(hdr)
	if err != nil {
		return "", fail(ReasonMalformed, errors.New("header encoding"))
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return "", fail(ReasonMalformed, errors.New("header json"))
	}
	for name := range fields {
		switch {
		case name == "alg" || name == "kid":
		case strings.EqualFold(name, "alg"), strings.EqualFold(name, "kid"):
			// encoding/json matches names case-insensitively and
			// go-jose does not: refuse the ambiguity.
			return "", fail(ReasonMalformed, errors.New("ambiguous header"))
		case strings.EqualFold(name, "crit"), strings.EqualFold(name, "b64"):
			// Clerk uses neither; "b64": false changes what is signed.
			return "", fail(ReasonMalformed, errors.New("unsupported header"))
		}
	}
	var alg string
	if err := json.Unmarshal(fields["alg"], &alg); err != nil || alg != "RS256" {
		return "", fail(ReasonBadAlg, nil)
	}
	if sig == "" {
		return "", fail(ReasonMalformed, errors.New("no signature"))
	}
	if err := json.Unmarshal(fields["kid"], &kid); err != nil || kid == "" {
		return "", fail(ReasonUnknownKey, errors.New("no kid"))
	}
	return kid, nil
}

// isB64URL reports whether s is non-empty, canonical, unpadded base64url.
// Canonical: the unused low bits of the last character are zero, so that
// one token has one spelling (decoders ignore those bits, which would let
// anyone make variants of a valid token).
func isB64URL(s string) bool {
	if s == "" || len(s)%4 == 1 {
		return false
	}
	var last byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z':
			last = c - 'A'
		case 'a' <= c && c <= 'z':
			last = c - 'a' + 26
		case '0' <= c && c <= '9':
			last = c - '0' + 52
		case c == '-':
			last = 62
		case c == '_':
			last = 63
		default:
			return false
		}
	}
	switch len(s) % 4 {
	case 2: // 1 byte in the last group: 4 unused bits
		return last&0x0f == 0
	case 3: // 2 bytes: 2 unused bits
		return last&0x03 == 0
	}
	return true
}

// clockFunc adapts a func to clerk.Clock.
type clockFunc func() time.Time

func (f clockFunc) Now() time.Time { return f() }

// Active asks Clerk's Backend API whether session id is still active (GET /v1/sessions/{id}):
// false once it is ended, revoked, expired or removed, or unknown to Clerk (404). An error
// means Clerk could not say; it never contains the secret key.
func (c *Clerk) Active(ctx context.Context, id string) (bool, error) {
	s, err := c.sessions.Get(ctx, id)
	if err != nil {
		var apiErr *clerk.APIErrorResponse
		if errors.As(err, &apiErr) && apiErr.HTTPStatusCode == http.StatusNotFound {
			return false, nil
		}
		return false, fmt.Errorf("clerk: read session: %w", errors.New(errorCode(err)))
	}
	return s.Status == "active", nil
}

// errorCode is what of a Clerk SDK error may be logged: its HTTP status, never the body
// or the request.
func errorCode(err error) string {
	var apiErr *clerk.APIErrorResponse
	if errors.As(err, &apiErr) {
		return "status " + strconv.Itoa(apiErr.HTTPStatusCode)
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return "timeout"
	}
	return "unreachable"
}
