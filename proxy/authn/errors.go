package authn

import "errors"

// Reason codes of authentication failures. They are stable: metrics labels,
// audit events and the proxy's 401/503 bodies use them.
const (
	ReasonMalformed       = "malformed"        // not a well-formed credential or token
	ReasonExpired         = "expired"          // exp has passed (beyond the leeway)
	ReasonNotYetValid     = "not_yet_valid"    // nbf or iat lies in the future (beyond the leeway)
	ReasonBadSignature    = "bad_signature"    // signature does not verify with the named key
	ReasonUnknownKey      = "unknown_key"      // kid is not in the instance's JWKS
	ReasonWrongIssuer     = "wrong_issuer"     // iss is not the configured issuer
	ReasonWrongAudience   = "wrong_audience"   // azp missing or not an authorized party
	ReasonNoSession       = "no_session"       // no sid: not a session token (e.g. a JWT template)
	ReasonNoExpiry        = "no_expiry"        // no exp: a token that would never expire
	ReasonBadAlg          = "bad_alg"          // header alg is not RS256
	ReasonKeysUnavailable = "keys_unavailable" // the JWKS could not be fetched: a 503, not a 401
)

// Error is an authentication failure with a stable reason code. Its message
// never contains the credential. Match it with errors.Is against the
// sentinels below (which compare by Reason) or read Reason with [Reason].
type Error struct {
	// Reason is one of the Reason… constants.
	Reason string
	// Err is the underlying cause, or nil.
	Err error
}

// Error returns "authn: <reason>" followed by the cause, if any.
func (e *Error) Error() string {
	if e.Err == nil {
		return "authn: " + e.Reason
	}
	return "authn: " + e.Reason + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is an *Error with the same Reason, so that
// errors.Is(err, ErrExpired) holds for every expired-token error whatever
// its cause.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Reason == e.Reason
}

// Sentinel errors, one per reason, for errors.Is.
var (
	ErrMalformed       = &Error{Reason: ReasonMalformed}
	ErrExpired         = &Error{Reason: ReasonExpired}
	ErrNotYetValid     = &Error{Reason: ReasonNotYetValid}
	ErrBadSignature    = &Error{Reason: ReasonBadSignature}
	ErrUnknownKey      = &Error{Reason: ReasonUnknownKey}
	ErrWrongIssuer     = &Error{Reason: ReasonWrongIssuer}
	ErrWrongAudience   = &Error{Reason: ReasonWrongAudience}
	ErrNoSession       = &Error{Reason: ReasonNoSession}
	ErrNoExpiry        = &Error{Reason: ReasonNoExpiry}
	ErrBadAlg          = &Error{Reason: ReasonBadAlg}
	ErrKeysUnavailable = &Error{Reason: ReasonKeysUnavailable}
)

// Reason returns the reason code of err: "" for nil, the Reason of the
// first *Error in err's chain, and "internal" for any other error.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return "internal"
}

// fail returns an *Error with reason and cause.
func fail(reason string, cause error) error {
	return &Error{Reason: reason, Err: cause}
}
