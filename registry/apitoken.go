package registry

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// An API token is a credential for a machine client of one gateway (a CI job, a script, a
// monitor) that acts with a member role, not as the gateway's owner. The gateway token, by
// contrast, is what moltgate itself presents upstream and may do whatever a token may; an
// API token may do what its role lists, and nothing a role cannot (owner methods). It is
// shown once when made, stored only as its SHA-256, named, optionally expiring, and revoked
// by id.

// APITokenPrefix starts every API token, so that it is told apart from a gateway token and
// a Clerk session token at a glance, and secret scanners can find one.
const APITokenPrefix = "mga_"

// MaxAPITokens bounds the API tokens of one gateway.
const MaxAPITokens = 50

// APIToken is one API token of a gateway as the registry stores it; never the token itself.
type APIToken struct {
	Name string `json:"name"`
	Role string `json:"role"`
	// Hash is SHA-256 of the token, compared in constant time.
	Hash      []byte    `json:"hash"`
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires,omitzero"` // zero: does not expire
	CreatedBy string    `json:"created_by,omitempty"`
}

// Expired reports whether t is past its expiry at now.
func (t APIToken) Expired(now time.Time) bool { return !t.Expires.IsZero() && !now.Before(t.Expires) }

var apiTokenIDPattern = regexp.MustCompile(`^at_[0-9a-f]{16}$`)

// ValidAPIToken reports whether s has the shape of an API token: the prefix and 64
// lowercase hex digits.
func ValidAPIToken(s string) bool {
	rest, ok := strings.CutPrefix(s, APITokenPrefix)
	return ok && ValidToken(rest)
}

// ValidAPITokenID reports whether s has the shape of an API token's id: "at_" and 16
// lowercase hex digits.
func ValidAPITokenID(s string) bool { return apiTokenIDPattern.MatchString(s) }

// validate reports the problems of token id, each naming its field.
func (t APIToken) validate(id string) []string {
	var bad []string
	if !ValidAPITokenID(id) {
		bad = append(bad, fmt.Sprintf("api_tokens: %q: want at_ and 16 lowercase hex digits", id))
	}
	for _, problem := range t.checkNameRole() {
		bad = append(bad, fmt.Sprintf("api_tokens[%s].%s", id, problem))
	}
	if len(t.Hash) != 32 {
		bad = append(bad, fmt.Sprintf("api_tokens[%s]: token hash missing", id))
	}
	return bad
}

// checkNameRole reports the problems of t's name and role, each starting with its field.
func (t APIToken) checkNameRole() []string {
	var bad []string
	// Printable: no control or format characters (a bidirectional override would make a
	// listing lie about which token is which).
	if t.Name == "" || utf8.RuneCountInString(t.Name) > 64 || !utf8.ValidString(t.Name) ||
		strings.ContainsFunc(t.Name, func(r rune) bool { return !unicode.IsPrint(r) }) {
		bad = append(bad, "name: want 1 to 64 printable characters")
	}
	if !ValidRole(t.Role) {
		bad = append(bad, fmt.Sprintf("role: %q: want viewer, operator or admin", t.Role))
	}
	return bad
}

// NewAPIToken is what CreateAPIToken is given: the token's name, role, lifetime (0: no
// expiry) and who asked for it (for the record).
type NewAPIToken struct {
	Name      string
	Role      string
	TTL       time.Duration
	CreatedBy string
}

// CreateAPIToken makes an API token for gateway id and returns it with its id and record.
// The token is returned here only: the registry keeps its hash.
func (r *Registry) CreateAPIToken(ctx context.Context, gateway string, n NewAPIToken) (token, tokenID string, g Gateway, err error) {
	bad := APIToken{Name: n.Name, Role: n.Role}.checkNameRole()
	if n.TTL < 0 {
		bad = append(bad, fmt.Sprintf("ttl: %v: want a positive duration, or none for no expiry", n.TTL))
	}
	if len(bad) > 0 { // named by field: the token has no id yet
		return "", "", Gateway{}, fmt.Errorf("%w: %s", ErrInvalid, strings.Join(bad, "; "))
	}
	var secret [32]byte
	var idBytes [8]byte
	rand.Read(secret[:])
	rand.Read(idBytes[:])
	token, tokenID = APITokenPrefix+hex.EncodeToString(secret[:]), "at_"+hex.EncodeToString(idBytes[:])
	h := HashToken(token)
	now := r.now().UTC()
	t := APIToken{Name: n.Name, Role: n.Role, Hash: h[:], Created: now, CreatedBy: n.CreatedBy}
	if n.TTL > 0 {
		t.Expires = now.Add(n.TTL)
	}
	g, err = r.update(ctx, gateway, func(g *Gateway) error {
		if len(g.APITokens) >= MaxAPITokens {
			return fmt.Errorf("%w: api_tokens: gateway %q has %d, the most it may have: revoke one first", ErrInvalid, gateway, MaxAPITokens)
		}
		if _, taken := g.APITokens[tokenID]; taken { // one chance in 2^64: never overwrite one
			return fmt.Errorf("registry: api token id %s drawn twice: try again", tokenID)
		}
		if g.APITokens == nil {
			g.APITokens = map[string]APIToken{}
		}
		g.APITokens[tokenID] = t
		return nil
	}, true)
	if err != nil {
		return "", "", Gateway{}, err
	}
	return token, tokenID, g, nil
}

// RevokeAPIToken removes API token tokenID of gateway id: from its commit on, requests
// with it are refused, and sockets opened with it are re-decided and closed.
func (r *Registry) RevokeAPIToken(ctx context.Context, gateway, tokenID string) (Gateway, error) {
	return r.update(ctx, gateway, func(g *Gateway) error {
		if _, ok := g.APITokens[tokenID]; !ok {
			return fmt.Errorf("%w: %q", ErrUnknownAPIToken, tokenID)
		}
		delete(g.APITokens, tokenID)
		return nil
	}, true)
}

// apiTokenRef is where the byAPIToken index finds a token.
type apiTokenRef struct{ gateway, id string }

// ByAPIToken returns the gateway and the id and record of API token tok. The lookup is by
// SHA-256 and the final comparison constant-time. Whether the token has expired is the
// caller's to check (APIToken.Expired), so that it can say so.
func (r *Registry) ByAPIToken(tok string) (*Entry, string, APIToken, bool) {
	h := HashToken(tok)
	r.mu.RLock()
	ref, ok := r.byAPIToken[h]
	e := r.byID[ref.gateway]
	r.mu.RUnlock()
	if !ok || e == nil {
		return nil, "", APIToken{}, false
	}
	t, ok := e.APITokens[ref.id]
	if !ok || subtle.ConstantTimeCompare(t.Hash, h[:]) != 1 {
		return nil, "", APIToken{}, false
	}
	return e, ref.id, t, true
}
