package authn

import (
	"log/slog"
	"time"
)

// Kind is the kind of caller behind a request.
type Kind string

// Kinds of caller.
const (
	// KindAnonymous: the request carried no credential.
	KindAnonymous Kind = "anonymous"
	// KindUser: a verified Clerk session.
	KindUser Kind = "user"
	// KindGatewayToken: a gateway token, whose hash the proxy looked up.
	KindGatewayToken Kind = "gateway_token"
)

// Identity is who made a request. It never holds a credential: only
// identifiers, so it may be logged, audited and passed to policies.
type Identity struct {
	Kind Kind
	// UserID is the Clerk user ("user_…", the sub claim).
	UserID string
	// SessionID is the Clerk session ("sess_…", the sid claim).
	SessionID string
	// OrgID is the active organization ("org_…"), or "".
	OrgID string
	// OrgRole is the role in the active organization in Clerk's
	// "org:<role>" form (for example "org:admin"), or "".
	OrgRole string
	// FactorAges is Clerk's fva claim: minutes since the first and the
	// second factor were verified, -1 for never; nil if the token has no
	// fva. Callers must not modify it.
	FactorAges []int
	// Expires is when the credential stops being valid (the token's exp);
	// zero if it does not expire on its own.
	Expires time.Time
}

// Anonymous is the identity of a request without a credential.
func Anonymous() Identity { return Identity{Kind: KindAnonymous} }

// LogValue logs the identifiers of an identity under stable keys.
func (id Identity) LogValue() slog.Value {
	attrs := make([]slog.Attr, 0, 4)
	attrs = append(attrs, slog.String("kind", string(id.Kind)))
	if id.UserID != "" {
		attrs = append(attrs, slog.String("user_id", id.UserID))
	}
	if id.SessionID != "" {
		attrs = append(attrs, slog.String("session_id", id.SessionID))
	}
	if id.OrgID != "" {
		attrs = append(attrs, slog.String("org_id", id.OrgID))
	}
	return slog.GroupValue(attrs...)
}
