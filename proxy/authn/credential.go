package authn

import (
	"errors"
	"net/http"
	"strings"
)

// MaxCredentialSize is the largest credential accepted, in bytes (8 KiB).
// Clerk session tokens are about 1 KiB; anything near this limit is an
// attempt to make the proxy hash, decode or parse a lot of attacker data.
const MaxCredentialSize = 8 << 10

// SessionCookie is the cookie in which Clerk's frontend keeps the session
// token.
const SessionCookie = "__session"

// Credential returns the credential of r: the token of the one
// "Authorization: Bearer <token>" header (scheme case-insensitive), or else
// the value of the __session cookie. ok is false when the request carries
// neither (an anonymous request); an empty __session cookie, which Clerk
// leaves behind at sign-out, counts as none.
//
// It fails with [ErrMalformed], and never returns a partial token, when
// the request has several Authorization headers or several __session
// cookies (an ambiguous credential: a proxy and the gateway might pick
// different ones), an Authorization scheme other than Bearer, an empty
// token, a token with characters outside the RFC 6750 b64token set, or one
// longer than [MaxCredentialSize]. The error never contains the token.
func Credential(r *http.Request) (token string, ok bool, err error) {
	if tok, ok, err := Bearer(r); ok || err != nil {
		return tok, ok, err
	}
	cookies := r.CookiesNamed(SessionCookie)
	switch {
	case len(cookies) == 0:
		return "", false, nil
	case len(cookies) > 1:
		return "", false, fail(ReasonMalformed, errors.New("more than one session cookie"))
	case cookies[0].Value == "":
		return "", false, nil
	}
	tok := cookies[0].Value
	if err := checkToken(tok); err != nil {
		return "", false, err
	}
	return tok, true, nil
}

// Bearer is Credential without the cookie: the token of the one
// "Authorization: Bearer <token>" header, refused as Credential refuses it.
// APIs for back ends and the CLI use it: a browser attaches cookies to a
// forged cross-site request by itself, never an Authorization header.
func Bearer(r *http.Request) (token string, ok bool, err error) {
	vals := r.Header.Values("Authorization")
	switch {
	case len(vals) == 0:
		return "", false, nil
	case len(vals) > 1:
		return "", false, fail(ReasonMalformed, errors.New("more than one Authorization header"))
	}
	tok, err := bearer(vals[0])
	if err != nil {
		return "", false, err
	}
	return tok, true, nil
}

// bearer returns the token of an Authorization header value.
func bearer(v string) (string, error) {
	if len(v) > MaxCredentialSize+len("Bearer ") {
		return "", fail(ReasonMalformed, errors.New("credential too large"))
	}
	scheme, tok, _ := strings.Cut(v, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		// Basic, Digest, …: the proxy authenticates only bearer tokens;
		// silently ignoring another scheme would forward it upstream.
		return "", fail(ReasonMalformed, errors.New("unsupported authorization scheme"))
	}
	tok = strings.Trim(tok, " \t")
	if err := checkToken(tok); err != nil {
		return "", err
	}
	return tok, nil
}

// checkToken validates a token's size and alphabet: RFC 6750's b64token
// (ALPHA DIGIT "-" "." "_" "~" "+" "/" then "=" padding). JWTs and gateway
// tokens are within it; anything outside is not a credential we issue.
func checkToken(tok string) error {
	switch {
	case tok == "":
		return fail(ReasonMalformed, errors.New("empty credential"))
	case len(tok) > MaxCredentialSize:
		return fail(ReasonMalformed, errors.New("credential too large"))
	}
	i := 0
	for ; i < len(tok) && isTokenChar(tok[i]); i++ {
	}
	for ; i < len(tok) && tok[i] == '='; i++ {
	}
	if i != len(tok) || tok[0] == '=' {
		return fail(ReasonMalformed, errors.New("invalid character in credential"))
	}
	return nil
}

func isTokenChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/'
}
