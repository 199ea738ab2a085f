package proxy

import (
	"net/http/httptest"
	"net/netip"
	"testing"
)

// Issue 12: CF-IPCountry reaches the policy only from a trusted proxy, and only as two
// letters or digits.
func TestClientCountry(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	tests := []struct {
		peer   string
		values []string
		want   string
	}{
		{"10.1.2.3:5000", []string{"de"}, "DE"},
		{"10.1.2.3:5000", []string{"T1"}, "T1"},
		{"203.0.113.9:5000", []string{"DE"}, ""},
		{"10.1.2.3:5000", nil, ""},
		{"10.1.2.3:5000", []string{"DE", "US"}, ""},
		{"10.1.2.3:5000", []string{"DEU"}, ""},
		{"10.1.2.3:5000", []string{"D-"}, ""},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tt.peer
		for _, v := range tt.values {
			r.Header.Add("CF-IPCountry", v)
		}
		if got := ClientCountry(r, trusted); got != tt.want {
			t.Errorf("%s %v: got %q, want %q", tt.peer, tt.values, got, tt.want)
		}
	}
}
