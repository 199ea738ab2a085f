// Package authn identifies the caller of a request: anonymous, a Clerk user
// (a session JWT), or a holder of a gateway token. It answers "who is
// this?", never "may they?": that is the policies' job.
//
// The proxy calls [Credential] to take the one credential of a request
// (Authorization: Bearer, else Clerk's __session cookie). A credential for
// which [IsGatewayToken] holds is looked up by [HashToken] in the registry;
// any other is a Clerk session token checked by [Clerk.Verify] with
// clerk-sdk-go against the instance's JWKS, which is fetched lazily and
// cached by kid.
//
// Invariants:
//   - Fail closed. A credential that is present but not proven valid is an
//     error, never an anonymous identity; an ambiguous one (two headers, two
//     cookies, another scheme) is malformed.
//   - A session token is accepted only if it is RS256-signed by a key of the
//     instance's JWKS, its iss is exactly the configured issuer, its azp is
//     an authorized party, it has exp (not past, with a small leeway) and sid,
//     and nbf/iat are not in the future. alg is checked before any key is
//     used.
//   - Secrets stay secret: no credential is logged, put in an error, a
//     metric label or an [Identity]; caches hold SHA-256 hashes of tokens;
//     secrets are compared in constant time ([TokenEqual]).
//   - Clerk is not hammered: concurrent verifications share one JWKS fetch,
//     and tokens naming unknown kids cause at most one fetch per
//     MinRefreshInterval. Failing to fetch keys is [ErrKeysUnavailable]
//     (a 503), not a client error.
//   - The hot path does no I/O: keys and recently verified tokens are cached
//     in memory; a cached token's expiry is still checked on every use.
//
// Every failure is an [*Error] with a stable reason code ([Reason]) for
// metrics and audit events.
package authn
