package proxy_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

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
