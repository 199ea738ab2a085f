package authn_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moltgate/moltgate/proxy/authn"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
	"github.com/prometheus/client_golang/prometheus"
)

// clock is a settable clock for the verifier.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock {
	return &clock{now: time.Now().Truncate(time.Second)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type fixture struct {
	srv   *clerktest.Server
	clerk *authn.Clerk
	clock *clock
	reg   *prometheus.Registry
}

// newFixture starts a fake Clerk and a verifier pointed at it. mod may
// change the configuration.
func newFixture(t testing.TB, mod func(*authn.ClerkConfig)) *fixture {
	t.Helper()
	srv := clerktest.New(t)
	return newFixtureWith(t, srv, mod)
}

func newFixtureWith(t testing.TB, srv *clerktest.Server, mod func(*authn.ClerkConfig)) *fixture {
	t.Helper()
	clk := newClock()
	cfg := authn.ClerkConfig{
		APIURL:            srv.URL,
		SecretKey:         srv.SecretKey(),
		Issuer:            srv.Issuer(),
		AuthorizedParties: []string{clerktest.DefaultAuthorizedParty, "https://other.example.test"},
		HTTPClient:        srv.Client(),
		Now:               clk.Now,
	}
	if mod != nil {
		mod(&cfg)
	}
	reg := prometheus.NewRegistry()
	c, err := authn.NewClerk(cfg, nil, reg)
	if err != nil {
		t.Fatalf("NewClerk: %v", err)
	}
	return &fixture{srv: srv, clerk: c, clock: clk, reg: reg}
}

// counter returns the value of a counter (with the given label pair, if
// any) from the fixture's registry.
func (f *fixture) counter(t testing.TB, name string, label ...string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(label); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == label[i] && lp.GetValue() == label[i+1] {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// checkErr fails t unless err has reason want and does not leak token.
func checkErr(t *testing.T, id authn.Identity, err error, want, token string) {
	t.Helper()
	if got := authn.Reason(err); got != want {
		t.Fatalf("reason: got %q (%v), want %q", got, err, want)
	}
	if err == nil {
		return
	}
	if id.Kind != "" || id.UserID != "" {
		t.Errorf("identity on error: got %+v, want zero", id)
	}
	if len(token) >= 8 && strings.Contains(err.Error(), token) {
		t.Errorf("error %q contains the token", err)
	}
	var ae *authn.Error
	if !errors.As(err, &ae) {
		t.Errorf("error %T is not *authn.Error", err)
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	now := f.clock.Now()
	srv := f.srv
	valid := func(c clerktest.Claims) clerktest.Claims {
		if c.IssuedAt.IsZero() {
			c.IssuedAt = now
		}
		return c
	}
	tests := []struct {
		name  string
		token func() string
		want  string // reason; "" for success
		check func(t *testing.T, id authn.Identity)
	}{
		{
			name: "valid v2 with org and fva",
			token: func() string {
				return srv.Mint(valid(clerktest.Claims{
					Subject:    "user_abc",
					SessionID:  "sess_abc",
					Org:        &clerktest.Org{ID: "org_1", Slug: "acme", Role: "admin", Permissions: "read,write"},
					FactorAges: []int{3, -1},
				}))
			},
			check: func(t *testing.T, id authn.Identity) {
				want := authn.Identity{
					Kind: authn.KindUser, UserID: "user_abc", SessionID: "sess_abc",
					OrgID: "org_1", OrgRole: "org:admin", FactorAges: []int{3, -1},
					Expires: now.Add(clerktest.DefaultLifetime),
				}
				if !identityEqual(id, want) {
					t.Errorf("got %+v, want %+v", id, want)
				}
			},
		},
		{
			name: "valid v1 org claims",
			token: func() string {
				return srv.Mint(valid(clerktest.Claims{Version: 1, Org: &clerktest.Org{ID: "org_9", Role: "org:member"}}))
			},
			check: func(t *testing.T, id authn.Identity) {
				if id.OrgID != "org_9" || id.OrgRole != "org:member" {
					t.Errorf("org: got %q %q, want org_9 org:member", id.OrgID, id.OrgRole)
				}
			},
		},
		{
			name: "valid without org or fva",
			token: func() string {
				return srv.Mint(valid(clerktest.Claims{}))
			},
			check: func(t *testing.T, id authn.Identity) {
				if id.OrgID != "" || id.OrgRole != "" || id.FactorAges != nil {
					t.Errorf("got org %q role %q fva %v, want none", id.OrgID, id.OrgRole, id.FactorAges)
				}
				if id.UserID != clerktest.DefaultSubject || id.SessionID != clerktest.DefaultSessionID {
					t.Errorf("got user %q session %q", id.UserID, id.SessionID)
				}
			},
		},
		{
			name: "second authorized party",
			token: func() string {
				return srv.Mint(valid(clerktest.Claims{AuthorizedParty: "https://other.example.test"}))
			},
		},
		{
			name: "expired",
			token: func() string {
				return srv.Mint(clerktest.Claims{IssuedAt: now.Add(-10 * time.Minute), Expiry: now.Add(-time.Minute)})
			},
			want: authn.ReasonExpired,
		},
		{
			name: "expired within leeway",
			token: func() string {
				return srv.Mint(clerktest.Claims{IssuedAt: now.Add(-time.Minute), Expiry: now.Add(-3 * time.Second)})
			},
		},
		{
			name: "expired just beyond leeway",
			token: func() string {
				return srv.Mint(clerktest.Claims{IssuedAt: now.Add(-time.Minute), Expiry: now.Add(-6 * time.Second)})
			},
			want: authn.ReasonExpired,
		},
		{
			name: "not yet valid",
			token: func() string {
				return srv.Mint(clerktest.Claims{IssuedAt: now, NotBefore: now.Add(time.Minute)})
			},
			want: authn.ReasonNotYetValid,
		},
		{
			name: "nbf within leeway",
			token: func() string {
				return srv.Mint(clerktest.Claims{IssuedAt: now, NotBefore: now.Add(3 * time.Second)})
			},
		},
		{
			name: "issued in the future",
			token: func() string {
				return srv.Mint(clerktest.Claims{IssuedAt: now.Add(time.Minute), NotBefore: now})
			},
			want: authn.ReasonNotYetValid,
		},
		{
			name:  "no exp",
			token: func() string { return srv.Mint(valid(clerktest.Claims{OmitExpiry: true})) },
			want:  authn.ReasonNoExpiry,
		},
		{
			name:  "no sid (JWT template)",
			token: func() string { return srv.Mint(valid(clerktest.Claims{OmitSessionID: true})) },
			want:  authn.ReasonNoSession,
		},
		{
			name: "no sub",
			token: func() string {
				return srv.Mint(valid(clerktest.Claims{Extra: map[string]any{"sub": ""}}))
			},
			want: authn.ReasonMalformed,
		},
		{
			name: "wrong azp",
			token: func() string {
				return srv.Mint(valid(clerktest.Claims{AuthorizedParty: "https://evil.example.test"}))
			},
			want: authn.ReasonWrongAudience,
		},
		{
			name:  "missing azp",
			token: func() string { return srv.Mint(valid(clerktest.Claims{OmitAuthorizedParty: true})) },
			want:  authn.ReasonWrongAudience,
		},
		{
			name: "wrong iss on a clerk domain",
			token: func() string {
				return srv.Mint(valid(clerktest.Claims{Issuer: "https://clerk.other-tenant.test"}))
			},
			want: authn.ReasonWrongIssuer,
		},
		{
			name: "wrong iss elsewhere",
			token: func() string {
				return srv.Mint(valid(clerktest.Claims{Issuer: "https://evil.example.test"}))
			},
			want: authn.ReasonWrongIssuer,
		},
		{
			name: "iss with trailing slash",
			token: func() string {
				return srv.Mint(valid(clerktest.Claims{Issuer: srv.Issuer() + "/"}))
			},
			want: authn.ReasonWrongIssuer,
		},
		{
			name:  "alg none",
			token: func() string { return srv.ForgeAlgNone(valid(clerktest.Claims{})) },
			want:  authn.ReasonBadAlg,
		},
		{
			name:  "HS256 with the public key as secret",
			token: func() string { return srv.ForgeHS256WithPublicKey(valid(clerktest.Claims{})) },
			want:  authn.ReasonBadAlg,
		},
		{
			name:  "signed by an unknown key",
			token: func() string { return srv.ForgeUnknownKey(valid(clerktest.Claims{})) },
			want:  authn.ReasonUnknownKey,
		},
		{
			name:  "signed by a foreign key under the known kid",
			token: func() string { return srv.ForgeForeignKey(valid(clerktest.Claims{})) },
			want:  authn.ReasonBadSignature,
		},
		{
			name:  "unknown kid",
			token: func() string { return srv.ForgeWrongKid(valid(clerktest.Claims{})) },
			want:  authn.ReasonUnknownKey,
		},
		{
			name: "tampered payload",
			token: func() string {
				tok, err := clerktest.Tamper(srv.Mint(valid(clerktest.Claims{})), func(c map[string]any) {
					c["sub"] = "user_admin"
				})
				if err != nil {
					t.Fatal(err)
				}
				return tok
			},
			want: authn.ReasonBadSignature,
		},
		{
			name: "tampered expiry",
			token: func() string {
				tok, err := clerktest.Tamper(srv.Mint(clerktest.Claims{IssuedAt: now.Add(-time.Hour)}), func(c map[string]any) {
					c["exp"] = now.Add(time.Hour).Unix()
				})
				if err != nil {
					t.Fatal(err)
				}
				return tok
			},
			want: authn.ReasonBadSignature,
		},
		{
			name: "signature stripped",
			token: func() string {
				tok := srv.Mint(valid(clerktest.Claims{}))
				return tok[:strings.LastIndexByte(tok, '.')+1]
			},
			want: authn.ReasonMalformed,
		},
		{
			name: "non-canonical base64 signature",
			token: func() string {
				tok := srv.Mint(valid(clerktest.Claims{}))
				return tok[:len(tok)-1] + string(nonCanonical(tok[len(tok)-1]))
			},
			want: authn.ReasonMalformed,
		},
		{
			name: "fva not a pair",
			token: func() string {
				return srv.Mint(valid(clerktest.Claims{FactorAges: []int{1, 2, 3}}))
			},
			want: authn.ReasonMalformed,
		},
		{name: "empty", token: func() string { return "" }, want: authn.ReasonMalformed},
		{name: "garbage", token: func() string { return "not-a-jwt" }, want: authn.ReasonMalformed},
		{name: "four segments", token: func() string { return "a.b.c.d" }, want: authn.ReasonMalformed},
		{name: "JWS JSON serialization", token: func() string { return `{"payload":"e30","signatures":[]}` }, want: authn.ReasonMalformed},
		{name: "header not JSON", token: func() string { return "bm90anNvbg.e30.c2ln" }, want: authn.ReasonMalformed},
		{
			name:  "gateway token",
			token: func() string { return strings.Repeat("ab", 32) },
			want:  authn.ReasonMalformed,
		},
		{
			name: "oversized",
			token: func() string {
				return srv.Mint(valid(clerktest.Claims{Extra: map[string]any{"pad": strings.Repeat("x", authn.MaxCredentialSize)}}))
			},
			want: authn.ReasonMalformed,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tok := tt.token()
			id, err := f.clerk.Verify(t.Context(), tok)
			checkErr(t, id, err, tt.want, tok)
			if err == nil {
				if id.Kind != authn.KindUser {
					t.Errorf("kind: got %q, want %q", id.Kind, authn.KindUser)
				}
				if tt.check != nil {
					tt.check(t, id)
				}
			}
		})
	}
}

// nonCanonical returns a base64url character that decodes like the last
// character c of a 2-bytes-short group (RSA-2048 signatures end so): it
// differs from c only in bits that decoders ignore.
func nonCanonical(c byte) byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	return alphabet[strings.IndexByte(alphabet, c)|1]
}

func identityEqual(a, b authn.Identity) bool {
	return a.Kind == b.Kind && a.UserID == b.UserID && a.SessionID == b.SessionID &&
		a.OrgID == b.OrgID && a.OrgRole == b.OrgRole && slices.Equal(a.FactorAges, b.FactorAges) &&
		a.Expires.Equal(b.Expires)
}

func TestVerifyCache(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	now := f.clock.Now()
	tok := f.srv.Mint(clerktest.Claims{IssuedAt: now, Expiry: now.Add(3 * time.Minute), FactorAges: []int{0, 5}})
	ctx := t.Context()

	id, err := f.clerk.Verify(ctx, tok)
	if err != nil {
		t.Fatalf("first verify: %v", err)
	}
	id.FactorAges[0] = 99 // callers must not be able to poison the cache
	id, err = f.clerk.Verify(ctx, tok)
	if err != nil {
		t.Fatalf("cached verify: %v", err)
	}
	if got := f.counter(t, "moltgate_authn_cache_hits_total"); got != 1 {
		t.Errorf("cache hits: got %v, want 1", got)
	}
	if !slices.Equal(id.FactorAges, []int{0, 5}) {
		t.Errorf("fva from cache: got %v, want [0 5]", id.FactorAges)
	}

	// Past the cache TTL but before exp: verified again, still fine.
	f.clock.Advance(time.Minute + time.Second)
	if _, err := f.clerk.Verify(ctx, tok); err != nil {
		t.Fatalf("verify after cache TTL: %v", err)
	}
	if got := f.counter(t, "moltgate_authn_cache_misses_total"); got != 2 {
		t.Errorf("cache misses: got %v, want 2", got)
	}
	if _, err := f.clerk.Verify(ctx, tok); err != nil {
		t.Fatalf("cached verify: %v", err)
	}

	// Within the leeway after exp the cached token still passes, as an
	// uncached one would; beyond it, the cache hit is refused.
	f.clock.Advance(2*time.Minute - time.Second + 4*time.Second)
	if _, err := f.clerk.Verify(ctx, tok); err != nil {
		t.Fatalf("verify within leeway: %v", err)
	}
	hits := f.counter(t, "moltgate_authn_cache_hits_total")
	f.clock.Advance(2 * time.Second)
	id, err = f.clerk.Verify(ctx, tok)
	checkErr(t, id, err, authn.ReasonExpired, tok)
	if got := f.counter(t, "moltgate_authn_cache_hits_total"); got != hits {
		t.Errorf("cache hits after expiry: got %v, want %v", got, hits)
	}
	// And it stays refused once evicted.
	id, err = f.clerk.Verify(ctx, tok)
	checkErr(t, id, err, authn.ReasonExpired, tok)
}

func TestVerifyCacheDisabled(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *authn.ClerkConfig) { c.CacheSize = -1 })
	tok := f.srv.Mint(clerktest.Claims{IssuedAt: f.clock.Now()})
	for range 3 {
		if _, err := f.clerk.Verify(t.Context(), tok); err != nil {
			t.Fatalf("verify: %v", err)
		}
	}
	if got := f.counter(t, "moltgate_authn_cache_hits_total"); got != 0 {
		t.Errorf("cache hits: got %v, want 0", got)
	}
}

func TestVerifyCacheFull(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *authn.ClerkConfig) { c.CacheSize = 4 })
	now := f.clock.Now()
	var toks []string
	for i := range 20 {
		tok := f.srv.Mint(clerktest.Claims{IssuedAt: now, SessionID: "sess_" + string(rune('a'+i))})
		toks = append(toks, tok)
		if _, err := f.clerk.Verify(t.Context(), tok); err != nil {
			t.Fatalf("verify %d: %v", i, err)
		}
	}
	for i, tok := range toks {
		id, err := f.clerk.Verify(t.Context(), tok)
		if err != nil {
			t.Fatalf("re-verify %d: %v", i, err)
		}
		if want := "sess_" + string(rune('a'+i)); id.SessionID != want {
			t.Errorf("session %d: got %q, want %q", i, id.SessionID, want)
		}
	}
}

func TestVerifyKeyRotation(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	ctx := t.Context()
	now := f.clock.Now()
	oldTok := f.srv.Mint(clerktest.Claims{IssuedAt: now})
	oldUnseen := f.srv.Mint(clerktest.Claims{IssuedAt: now, SessionID: "sess_unseen"})
	if _, err := f.clerk.Verify(ctx, oldTok); err != nil {
		t.Fatalf("verify before rotation: %v", err)
	}
	if got := f.srv.Fetches(); got != 1 {
		t.Fatalf("fetches after first use: got %d, want 1", got)
	}

	// A new kid right after a fetch still triggers a refresh: the first
	// unknown kid since the last fetch may, once the interval has passed.
	f.clock.Advance(authn.DefaultMinRefreshInterval)
	f.srv.RotateKey(true)
	newTok := f.srv.Mint(clerktest.Claims{IssuedAt: f.clock.Now()})
	if _, err := f.clerk.Verify(ctx, newTok); err != nil {
		t.Fatalf("verify with rotated key: %v", err)
	}
	if got := f.srv.Fetches(); got != 2 {
		t.Errorf("fetches after rotation: got %d, want 2", got)
	}

	// Rotation that withdraws the old keys, within the interval: the new
	// kid is unknown until the interval has passed, and no fetch happens.
	f.srv.RotateKey(false)
	newerTok := f.srv.Mint(clerktest.Claims{IssuedAt: f.clock.Now()})
	id, err := f.clerk.Verify(ctx, newerTok)
	checkErr(t, id, err, authn.ReasonUnknownKey, newerTok)
	if got := f.srv.Fetches(); got != 2 {
		t.Errorf("fetches within interval: got %d, want 2", got)
	}
	f.clock.Advance(authn.DefaultMinRefreshInterval)
	if _, err := f.clerk.Verify(ctx, newerTok); err != nil {
		t.Fatalf("verify after interval: %v", err)
	}
	if got := f.srv.Fetches(); got != 3 {
		t.Errorf("fetches after interval: got %d, want 3", got)
	}
	// The withdrawn key no longer verifies anything not already cached.
	id, err = f.clerk.Verify(ctx, oldUnseen)
	checkErr(t, id, err, authn.ReasonUnknownKey, oldUnseen)
	if got := f.counter(t, "moltgate_authn_jwks_refreshes_total", "result", "ok"); got != 3 {
		t.Errorf("refreshes ok: got %v, want 3", got)
	}
}

func TestVerifyUnknownKidFlood(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	now := f.clock.Now()
	flood := func() {
		var wg sync.WaitGroup
		for range 100 {
			tok := f.srv.ForgeWrongKid(clerktest.Claims{IssuedAt: now})
			wg.Go(func() {
				id, err := f.clerk.Verify(t.Context(), tok)
				if authn.Reason(err) != authn.ReasonUnknownKey || id.Kind != "" {
					t.Errorf("flood: got %+v, %v; want unknown_key", id, err)
				}
			})
		}
		wg.Wait()
	}
	flood()
	if got := f.srv.Fetches(); got != 1 {
		t.Errorf("fetches after first flood: got %d, want 1", got)
	}
	flood()
	if got := f.srv.Fetches(); got != 1 {
		t.Errorf("fetches after second flood in the same interval: got %d, want 1", got)
	}
	f.clock.Advance(authn.DefaultMinRefreshInterval)
	flood()
	if got := f.srv.Fetches(); got != 2 {
		t.Errorf("fetches after a flood in the next interval: got %d, want 2", got)
	}
	// Known-kid tokens are unaffected.
	if _, err := f.clerk.Verify(t.Context(), f.srv.Mint(clerktest.Claims{IssuedAt: now})); err != nil {
		t.Errorf("valid token after flood: %v", err)
	}
}

func TestVerifyConcurrentFirstUse(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	f.srv.SetDelay(50 * time.Millisecond) // make the callers overlap the fetch
	tok := f.srv.Mint(clerktest.Claims{IssuedAt: f.clock.Now()})
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if _, err := f.clerk.Verify(t.Context(), tok); err != nil {
				t.Errorf("verify: %v", err)
			}
		})
	}
	wg.Wait()
	if got := f.srv.Fetches(); got != 1 {
		t.Errorf("fetches: got %d, want 1", got)
	}
}

func TestVerifyKeysUnavailable(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusInternalServerError, http.StatusServiceUnavailable, http.StatusTooManyRequests} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			f.srv.SetFail(status)
			tok := f.srv.Mint(clerktest.Claims{IssuedAt: f.clock.Now()})
			id, err := f.clerk.Verify(t.Context(), tok)
			checkErr(t, id, err, authn.ReasonKeysUnavailable, tok)
			if !errors.Is(err, authn.ErrKeysUnavailable) {
				t.Errorf("errors.Is(%v, ErrKeysUnavailable): got false, want true", err)
			}
			// Within the failure backoff: no new fetch.
			id, err = f.clerk.Verify(t.Context(), tok)
			checkErr(t, id, err, authn.ReasonKeysUnavailable, tok)
			if got := f.srv.Fetches(); got != 1 {
				t.Errorf("fetches: got %d, want 1", got)
			}
			if got := f.counter(t, "moltgate_authn_jwks_refreshes_total", "result", "error"); got != 1 {
				t.Errorf("refresh errors: got %v, want 1", got)
			}
			// Recovery after the backoff.
			f.srv.SetFail(0)
			f.clock.Advance(5 * time.Second)
			if _, err := f.clerk.Verify(t.Context(), tok); err != nil {
				t.Errorf("verify after recovery: %v", err)
			}
		})
	}
}

func TestVerifyWrongSecretKey(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *authn.ClerkConfig) { c.SecretKey = "sk_test_wrong" })
	tok := f.srv.Mint(clerktest.Claims{IssuedAt: f.clock.Now()})
	id, err := f.clerk.Verify(t.Context(), tok)
	checkErr(t, id, err, authn.ReasonKeysUnavailable, tok)
	if strings.Contains(err.Error(), "sk_test_wrong") {
		t.Errorf("error %q contains the secret key", err)
	}
}

func TestVerifyKeysStalled(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *authn.ClerkConfig) {
		hc := *c.HTTPClient
		hc.Timeout = 300 * time.Millisecond
		c.HTTPClient = &hc
	})
	f.srv.SetDelay(time.Hour)
	tok := f.srv.Mint(clerktest.Claims{IssuedAt: f.clock.Now()})

	// The caller that starts the fetch gives up when its context ends.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	id, err := f.clerk.Verify(ctx, tok)
	checkErr(t, id, err, authn.ReasonKeysUnavailable, tok)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cause: got %v, want context.DeadlineExceeded", err)
	}
	// The fetch it started ends at the HTTP client's timeout, and the next
	// caller learns of the failure without a second fetch.
	id, err = f.clerk.Verify(t.Context(), tok)
	checkErr(t, id, err, authn.ReasonKeysUnavailable, tok)
	if got := f.srv.Fetches(); got != 1 {
		t.Errorf("fetches: got %d, want 1", got)
	}
}

func TestRefresh(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	if err := f.clerk.Refresh(t.Context()); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if _, err := f.clerk.Verify(t.Context(), f.srv.Mint(clerktest.Claims{IssuedAt: f.clock.Now()})); err != nil {
		t.Fatalf("verify after refresh: %v", err)
	}
	if got := f.srv.Fetches(); got != 1 {
		t.Errorf("fetches: got %d, want 1", got)
	}
	f.srv.SetFail(http.StatusBadGateway)
	if err := f.clerk.Refresh(t.Context()); !errors.Is(err, authn.ErrKeysUnavailable) {
		t.Errorf("Refresh with Clerk down: got %v, want ErrKeysUnavailable", err)
	}
	// A failed refresh keeps the keys it had.
	if _, err := f.clerk.Verify(t.Context(), f.srv.Mint(clerktest.Claims{IssuedAt: f.clock.Now(), SessionID: "sess_2"})); err != nil {
		t.Errorf("verify after failed refresh: %v", err)
	}
}

func TestNewClerkConfig(t *testing.T) {
	t.Parallel()
	good := authn.ClerkConfig{
		SecretKey:         "sk_test_x",
		Issuer:            "https://clerk.example.com",
		AuthorizedParties: []string{"https://app.example.com"},
	}
	tests := []struct {
		name string
		mod  func(*authn.ClerkConfig)
		want []string // substrings of the error; none: valid
	}{
		{name: "valid", mod: func(*authn.ClerkConfig) {}},
		{name: "empty", mod: func(c *authn.ClerkConfig) { *c = authn.ClerkConfig{} },
			want: []string{"secret_key: empty", "issuer: empty", "authorized_parties: empty"}},
		{name: "http issuer", mod: func(c *authn.ClerkConfig) { c.Issuer = "http://clerk.example.com" },
			want: []string{"issuer: not an https URL"}},
		{name: "empty party", mod: func(c *authn.ClerkConfig) { c.AuthorizedParties = []string{"https://a", ""} },
			want: []string{"authorized_parties[1]: empty"}},
		{name: "negative leeway", mod: func(c *authn.ClerkConfig) { c.Leeway = -time.Second },
			want: []string{"leeway"}},
		{name: "huge leeway", mod: func(c *authn.ClerkConfig) { c.Leeway = time.Hour },
			want: []string{"leeway"}},
		{name: "bad api url", mod: func(c *authn.ClerkConfig) { c.APIURL = "ftp://x" },
			want: []string{"api_url"}},
		{name: "negative interval", mod: func(c *authn.ClerkConfig) { c.MinRefreshInterval = -1 },
			want: []string{"min_refresh_interval"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := good
			tt.mod(&cfg)
			_, err := authn.NewClerk(cfg, nil, prometheus.NewRegistry())
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got nil, want error with %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestNewClerkRegistersMetricsOnce(t *testing.T) {
	t.Parallel()
	cfg := authn.ClerkConfig{
		SecretKey:         "sk_test_x",
		Issuer:            "https://clerk.example.com",
		AuthorizedParties: []string{"https://app.example.com"},
	}
	reg := prometheus.NewRegistry()
	if _, err := authn.NewClerk(cfg, nil, reg); err != nil {
		t.Fatalf("first: %v", err)
	}
	if _, err := authn.NewClerk(cfg, nil, reg); err == nil {
		t.Error("second on the same registry: got nil, want a registration error")
	}
	if _, err := authn.NewClerk(cfg, nil, nil); err != nil {
		t.Errorf("nil registry: %v", err)
	}
}

func TestClerkConfigRedactsSecret(t *testing.T) {
	t.Parallel()
	cfg := authn.ClerkConfig{SecretKey: "sk_live_supersecret", Issuer: "https://clerk.example.com"}
	var b strings.Builder
	b.WriteString(cfg.String())
	b.WriteString(cfg.LogValue().String())
	if strings.Contains(b.String(), "supersecret") {
		t.Errorf("got %q, want the secret redacted", b.String())
	}
}

func TestErrorIs(t *testing.T) {
	t.Parallel()
	err := &authn.Error{Reason: authn.ReasonExpired, Err: errors.New("cause")}
	if !errors.Is(err, authn.ErrExpired) {
		t.Error("errors.Is(expired, ErrExpired): got false, want true")
	}
	if errors.Is(err, authn.ErrMalformed) {
		t.Error("errors.Is(expired, ErrMalformed): got true, want false")
	}
	if got := authn.Reason(errors.New("x")); got != "internal" {
		t.Errorf("Reason(other): got %q, want internal", got)
	}
	if got := authn.Reason(nil); got != "" {
		t.Errorf("Reason(nil): got %q, want empty", got)
	}
	if got := err.Error(); got != "authn: expired: cause" {
		t.Errorf("Error(): got %q", got)
	}
}
