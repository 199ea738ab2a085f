package policies

import (
	"maps"
	"slices"
	"strings"
)

// MaskInput is the one masking of a policy input that leaves moltgate (the decision log's
// policy.decision events, the shadow set's policy.shadow_difference events): it returns a
// copy of doc, an input as JSON values, without what may be a credential, and the removed
// fields as OPA mask paths (/input/ws/channels), sorted. Removed are:
//   - the fields of erasedPaths (a configuration write's channels: bot tokens, secrets);
//   - every field whose key is named like a credential (token, secret, password, key,
//     authorization, cookie, code, botToken, ..., at any depth);
//   - every string field, or list holding a string, that looks like one (an authorization
//     scheme, a JWT, a run of 40 or more token characters);
//   - a request path that carries a query.
//
// doc itself is not changed.
func MaskInput(doc map[string]any) (map[string]any, []string) {
	out := copyJSON(doc).(map[string]any)
	var erased []string
	for _, p := range erasedPaths {
		if erase(out, strings.Split(p[len("/input/"):], "/")) {
			erased = append(erased, p)
		}
	}
	if req, ok := out["request"].(map[string]any); ok {
		if p, ok := req["path"].(string); ok && strings.Contains(p, "?") {
			delete(req, "path")
			erased = append(erased, "/input/request/path")
		}
	}
	erased = eraseCredentials(out, "/input", erased)
	slices.Sort(erased)
	return out, erased
}

// erasedPaths are the input fields never written out whole, as OPA mask paths. A
// configuration write's channels section holds the channels' own credentials (bot tokens,
// signing secrets).
var erasedPaths = []string{"/input/ws/channels"}

// copyJSON returns a deep copy of a JSON value (maps, lists, scalars).
func copyJSON(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[k] = copyJSON(x)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = copyJSON(x)
		}
		return out
	}
	return v
}

// erase removes the field at path from doc; it reports whether it was there.
func erase(doc map[string]any, path []string) bool {
	for _, p := range path[:len(path)-1] {
		next, ok := doc[p].(map[string]any)
		if !ok {
			return false
		}
		doc = next
	}
	last := path[len(path)-1]
	if _, ok := doc[last]; !ok {
		return false
	}
	delete(doc, last)
	return true
}

// eraseCredentials removes from v, at any depth, every field named like a credential and
// every field holding a string that looks like one, appending the paths it removed to
// erased, which it returns. A field inside a list is not addressable by a mask path: the
// list's own field goes.
func eraseCredentials(v map[string]any, at string, erased []string) []string {
	for _, k := range slices.Sorted(maps.Keys(v)) {
		p := at + "/" + k
		if x, ok := v[k].(map[string]any); ok && !credentialKey(k) {
			erased = eraseCredentials(x, p, erased)
			continue
		}
		if credentialKey(k) || holdsCredential(v[k]) {
			delete(v, k)
			erased = append(erased, p)
		}
	}
	return erased
}

// holdsCredential reports whether v is a string that looks like a credential, or a list
// holding one at any depth.
func holdsCredential(v any) bool {
	switch v := v.(type) {
	case string:
		return credentialLike(v)
	case []any:
		return slices.ContainsFunc(v, holdsCredential)
	case map[string]any: // an object inside a list: its fields are not addressable
		for k, x := range v {
			if credentialKey(k) || holdsCredential(x) {
				return true
			}
		}
	}
	return false
}

// credentialKeys are the names of keys whose values are credentials wherever they appear
// (a channel configuration in a config write carries bot tokens, for one).
var credentialKeys = []string{"authorization", "cookie", "token", "secret", "password", "passwd", "apikey", "api_key",
	"key", "launch_code", "code", "credential", "credentials", "bottoken", "bot_token", "access_token", "refresh_token",
	"webhook", "signing_secret", "app_token"}

// credentialKey reports whether a key names a credential: its lower-case form is, or ends
// in _ or - and, one of credentialKeys, or ends in token, secret or password (botToken,
// clientSecret, adminPassword).
func credentialKey(k string) bool {
	l := strings.ToLower(k)
	for _, m := range credentialKeys {
		if l == m || strings.HasSuffix(l, "_"+m) || strings.HasSuffix(l, "-"+m) {
			return true
		}
	}
	return strings.HasSuffix(l, "token") || strings.HasSuffix(l, "secret") || strings.HasSuffix(l, "password")
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
