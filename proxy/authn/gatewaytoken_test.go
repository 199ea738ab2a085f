package authn_test

import (
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/proxy/authn"
)

func TestNewGatewayToken(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 100 {
		tok, err := authn.NewGatewayToken()
		if err != nil {
			t.Fatal(err)
		}
		if !authn.IsGatewayToken(tok) {
			t.Fatalf("IsGatewayToken(%q): got false, want true", tok)
		}
		if seen[tok] {
			t.Fatalf("duplicate token %q", tok)
		}
		seen[tok] = true
	}
}

func TestIsGatewayToken(t *testing.T) {
	t.Parallel()
	hex64 := strings.Repeat("0123456789abcdef", 4)
	tests := []struct {
		in   string
		want bool
	}{
		{hex64, true},
		{strings.ToUpper(hex64), false},
		{hex64[:63], false},
		{hex64 + "0", false},
		{hex64[:63] + "g", false},
		{"", false},
		{"eyJhbGciOiJSUzI1NiJ9.e30.c2ln", false},
		{strings.Repeat("0", 31) + "." + strings.Repeat("0", 32), false},
	}
	for _, tt := range tests {
		if got := authn.IsGatewayToken(tt.in); got != tt.want {
			t.Errorf("IsGatewayToken(%q): got %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestHashTokenAndEqual(t *testing.T) {
	t.Parallel()
	tok, err := authn.NewGatewayToken()
	if err != nil {
		t.Fatal(err)
	}
	h := authn.HashToken(tok)
	if want := sha256.Sum256([]byte(tok)); h != want {
		t.Errorf("HashToken: got %x, want %x", h, want)
	}
	other := authn.HashToken(tok[:63] + "x")
	if !authn.TokenEqual(h[:], h[:]) {
		t.Error("TokenEqual(h, h): got false, want true")
	}
	if authn.TokenEqual(h[:], other[:]) {
		t.Error("TokenEqual(h, other): got true, want false")
	}
	if authn.TokenEqual(h[:], h[:31]) {
		t.Error("TokenEqual with different lengths: got true, want false")
	}
}
