package proxy_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/moltgate/moltgate/proxy/authn/clerktest"
	"github.com/moltgate/moltgate/proxy/browser"
	"github.com/moltgate/moltgate/registry"
)

// BenchmarkServeHTTP is one allowed request through the whole handler (Clerk session from
// the verified-token cache, policy, forward to a loopback upstream), for profiling.
func BenchmarkServeHTTP(b *testing.B) {
	f := newFixture(b, registry.AuthToken)
	jwt := f.user("user_owner")
	h := f.srv.Config.Handler
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodGet, "http://gwa.gw.localhost/health", nil)
			req.Header.Set("Authorization", "Bearer "+jwt)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != 200 {
				b.Fatalf("status %d: %s", w.Code, w.Body)
			}
		}
	})
}

// BenchmarkCredentialPaths is one allowed request through the whole handler for each way a
// caller is identified, interleaved in one run: a gateway token (the baseline: a hash and a
// map lookup), moltgate's browser session cookie, and a Clerk session JWT from the verified
// cache. With MOLTGATE_BENCH_REPORT=1 it prints each path's cost and the browser session's
// ratio to the gateway token, and the Clerk calls the session path made (none: Clerk is
// checked in the background, never on a request).
func BenchmarkCredentialPaths(b *testing.B) {
	f := newFixture(b, registry.AuthToken)
	sess, _, err := f.browsers.Start(browser.Grant{Gateway: "gwa", UserID: "user_owner", ClerkSession: clerktest.DefaultSessionID})
	if err != nil {
		b.Fatal(err)
	}
	jwt := f.user("user_owner")
	paths := []struct {
		name string
		set  func(*http.Request)
	}{
		{"gateway_token", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tokA) }},
		{"browser_session", func(r *http.Request) { r.AddCookie(&http.Cookie{Name: browser.CookieHTTP, Value: sess}) }},
		{"clerk_jwt", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+jwt) }},
	}
	h := f.srv.Config.Handler
	spent := make([]time.Duration, len(paths))
	gets := f.clerk.SessionGets()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p := paths[i%len(paths)]
		req := httptest.NewRequest(http.MethodGet, "http://gwa.gw.localhost/health", nil)
		p.set(req)
		w := httptest.NewRecorder()
		start := time.Now()
		h.ServeHTTP(w, req)
		spent[i%len(paths)] += time.Since(start)
		if w.Code != 200 {
			b.Fatalf("%s: status %d: %s", p.name, w.Code, w.Body)
		}
	}
	if os.Getenv("MOLTGATE_BENCH_REPORT") != "1" || b.N < 300 {
		return
	}
	each := float64(b.N / len(paths))
	for i, p := range paths {
		fmt.Printf("bench request_%s_us %.1f (whole handler, loopback upstream)\n", p.name, float64(spent[i].Microseconds())/each)
	}
	fmt.Printf("bench browser_session_vs_gateway_token %.2f\n", float64(spent[1])/float64(spent[0]))
	fmt.Printf("bench browser_session_clerk_calls %d (per %d requests)\n", f.clerk.SessionGets()-gets, b.N/len(paths))
}
