package keystore

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// A provider answering with a redirect does not get the key sent on to where it points,
// and the key is not counted as verified.
func TestVerifyFollowsNoRedirect(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("x-api-key") != "" {
			elsewhere.Add(1)
		}
	}))
	defer other.Close()
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/v1/models", http.StatusFound)
	}))
	defer provider.Close()
	v := &HTTPVerifier{Endpoints: map[string]Endpoint{"anthropic": {URL: provider.URL + "/v1/models", Header: "x-api-key"}}}
	if err := v.Verify(t.Context(), "anthropic", KindProviderKey, Secret("sk-ant-redirect-test-0123456789")); err == nil {
		t.Fatal("a redirect was taken as the provider accepting the key")
	}
	if n := elsewhere.Load(); n != 0 {
		t.Fatalf("the key was sent to the redirect target %d times", n)
	}
}
