package decisionlog

import (
	"maps"
	"slices"
	"strings"
)

// ErasedPaths are the input fields never written to the decision log, as OPA mask paths.
// A configuration write's channels section holds the channels' own credentials (bot tokens,
// signing secrets): erased whole.
var ErasedPaths = []string{"/input/ws/channels"}

// erase removes the field at slash-separated path from doc; it reports whether it was there.
func erase(doc map[string]any, path string) bool {
	parts := strings.Split(path, "/")
	for _, p := range parts[:len(parts)-1] {
		next, ok := doc[p].(map[string]any)
		if !ok {
			return false
		}
		doc = next
	}
	last := parts[len(parts)-1]
	if _, ok := doc[last]; !ok {
		return false
	}
	delete(doc, last)
	return true
}

// eraseCredentials removes from v every string that looks like a credential (see
// credentialLike), appending the paths it removed to erased, which it returns.
func eraseCredentials(v map[string]any, at string, erased []string) []string {
	for _, k := range slices.Sorted(maps.Keys(v)) {
		p := at + "/" + k
		switch x := v[k].(type) {
		case string:
			if credentialLike(x) {
				delete(v, k)
				erased = append(erased, p)
			}
		case map[string]any:
			erased = eraseCredentials(x, p, erased)
		case []any:
			for _, e := range x {
				if s, ok := e.(string); ok && credentialLike(s) {
					delete(v, k)
					erased = append(erased, p)
					break
				}
			}
		}
	}
	return erased
}

// minSecretRun is the shortest run of token characters read as a secret: gateway tokens are
// 64 hex digits, launch codes and session tokens 43 base64url characters, provider keys
// longer; Clerk's user and session ids (32 characters) stay readable.
const minSecretRun = 40

// credentialLike reports whether s may hold a credential a client put where moltgate reads
// names: an authorization scheme, a JWT, or a long run of token characters.
func credentialLike(s string) bool {
	lower := strings.ToLower(s)
	if strings.Contains(lower, "bearer ") || strings.Contains(lower, "basic ") {
		return true
	}
	if i := strings.Index(s, "eyJ"); i >= 0 && strings.Count(s[i:], ".") >= 2 {
		return true
	}
	run := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '+' || c == '=' {
			run++
			if run >= minSecretRun {
				return true
			}
			continue
		}
		run = 0
	}
	return false
}
