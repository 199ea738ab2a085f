package authn

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"unsafe"
)

// GatewayTokenLen is the length of a gateway token: 32 random bytes as
// lowercase hex.
const GatewayTokenLen = 64

// NewGatewayToken returns a fresh gateway token: 32 bytes from crypto/rand,
// lowercase hex. Store only [HashToken] of it.
func NewGatewayToken() (string, error) {
	var b [GatewayTokenLen / 2]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("authn: new gateway token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// IsGatewayToken reports whether s has the shape of a gateway token:
// exactly 64 lowercase hex digits. A bearer credential of this shape is a
// gateway token; anything else is taken for a Clerk session JWT (which can
// never have this shape: a JWT contains dots).
func IsGatewayToken(s string) bool {
	if len(s) != GatewayTokenLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// HashToken returns the SHA-256 of a token. Registries store and index
// this, never the token: a leaked registry does not leak usable tokens.
// A plain hash suffices because tokens carry 256 bits of entropy.
func HashToken(tok string) [32]byte {
	return hashString(tok)
}

// hashString is sha256.Sum256 of s without copying s: the conversion
// []byte(s) allocates a copy of every token on the hot path. The bytes are
// only read.
func hashString(s string) [32]byte {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// TokenEqual reports whether a and b are equal in time that depends only
// on their lengths.
//
// Constant time stops timing attacks: with an early-exit comparison an
// attacker could learn a stored secret byte by byte from how long each
// rejection takes.
func TokenEqual(a, b []byte) bool {
	return subtle.ConstantTimeCompare(a, b) == 1
}
