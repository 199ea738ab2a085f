package authn_test

import (
	"bufio"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moltgate/moltgate/proxy/authn"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
)

// reasons are the reason codes Verify may return.
var reasons = []string{
	authn.ReasonMalformed, authn.ReasonExpired, authn.ReasonNotYetValid,
	authn.ReasonBadSignature, authn.ReasonUnknownKey, authn.ReasonWrongIssuer,
	authn.ReasonWrongAudience, authn.ReasonNoSession, authn.ReasonNoExpiry,
	authn.ReasonBadAlg, authn.ReasonKeysUnavailable,
}

func loadVerifySeeds(t testing.TB) []string {
	t.Helper()
	fh, err := os.Open("testdata/verify_seeds.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var seeds []string
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		seeds = append(seeds, line)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return seeds
}

// FuzzVerify checks that Verify never panics, returns only known reasons,
// never echoes the token in an error, and yields an identity only for the
// tokens the fake Clerk minted (never for a mutation of one).
func FuzzVerify(f *testing.F) {
	fx := newFixture(f, nil)
	now := fx.clock.Now()
	minted := map[string]bool{}
	for _, c := range []clerktest.Claims{
		{IssuedAt: now},
		{IssuedAt: now, Org: &clerktest.Org{ID: "org_1", Role: "admin"}, FactorAges: []int{1, -1}},
		{IssuedAt: now, Version: 1, Org: &clerktest.Org{ID: "org_2", Role: "org:member"}},
	} {
		tok := fx.srv.Mint(c)
		minted[tok] = true
		f.Add(tok)
	}
	for _, tok := range []string{
		fx.srv.Mint(clerktest.Claims{IssuedAt: now, OmitExpiry: true}),
		fx.srv.Mint(clerktest.Claims{IssuedAt: now, OmitSessionID: true}),
		fx.srv.Mint(clerktest.Claims{IssuedAt: now.Add(-time.Hour)}),
		fx.srv.ForgeAlgNone(clerktest.Claims{IssuedAt: now}),
		fx.srv.ForgeHS256WithPublicKey(clerktest.Claims{IssuedAt: now}),
		fx.srv.ForgeForeignKey(clerktest.Claims{IssuedAt: now}),
	} {
		f.Add(tok)
	}
	for _, s := range loadVerifySeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := fx.clerk.Verify(t.Context(), tok)
		if err == nil {
			if !minted[tok] {
				t.Fatalf("identity %+v for a token that was not minted: %q", id, tok)
			}
			if id.Kind != authn.KindUser || id.UserID == "" || id.SessionID == "" {
				t.Fatalf("incomplete identity %+v", id)
			}
			return
		}
		if !slices.Contains(reasons, authn.Reason(err)) {
			t.Fatalf("unknown reason %q: %v", authn.Reason(err), err)
		}
		if id.Kind != "" || id.UserID != "" {
			t.Fatalf("identity %+v with error %v", id, err)
		}
		if len(tok) >= 16 && strings.Contains(err.Error(), tok) {
			t.Fatalf("error %q contains the token", err)
		}
	})
}

func BenchmarkVerifyCached(b *testing.B) {
	f := newFixture(b, nil)
	tok := f.srv.Mint(clerktest.Claims{IssuedAt: f.clock.Now(), Org: &clerktest.Org{ID: "org_1", Role: "admin"}, FactorAges: []int{1, -1}})
	ctx := b.Context()
	if _, err := f.clerk.Verify(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := f.clerk.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyCachedParallel(b *testing.B) {
	f := newFixture(b, nil)
	tok := f.srv.Mint(clerktest.Claims{IssuedAt: f.clock.Now(), FactorAges: []int{1, -1}})
	ctx := b.Context()
	if _, err := f.clerk.Verify(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := f.clerk.Verify(ctx, tok); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkVerifyUncached(b *testing.B) {
	f := newFixture(b, func(c *authn.ClerkConfig) { c.CacheSize = -1 })
	tok := f.srv.Mint(clerktest.Claims{IssuedAt: f.clock.Now(), Org: &clerktest.Org{ID: "org_1", Role: "admin"}, FactorAges: []int{1, -1}})
	ctx := b.Context()
	if _, err := f.clerk.Verify(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := f.clerk.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}
