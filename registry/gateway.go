package registry

import "time"

// AuthMode is how moltgate authenticates to a gateway upstream.
type AuthMode string

const (
	// AuthToken sends the gateway token as a Bearer credential (OpenClaw gateway.auth.mode "token").
	AuthToken AuthMode = "token"
	// AuthTrustedProxy sends the caller's identity in x-forwarded-user and caps its scopes with
	// x-openclaw-scopes (OpenClaw gateway.auth.mode "trusted-proxy").
	AuthTrustedProxy AuthMode = "trusted-proxy"
)

// Roles a member can hold on a gateway. The actions of each role are policy data (data.roles).
const (
	RoleViewer   = "viewer"
	RoleOperator = "operator"
	RoleAdmin    = "admin"
)

// SkillRules restrict which tools and skills may be called on a gateway. Deny always wins; a
// non-empty Allow admits only the names it lists.
type SkillRules struct {
	Allow []string `json:"allow,omitempty"`
	Deny  []string `json:"deny,omitempty"`
}

// Gateway is one tenant's OpenClaw gateway as the registry stores it. Values handed out by the
// registry are copies: changing one changes nothing stored.
type Gateway struct {
	ID       string            `json:"id"`
	Tenant   string            `json:"tenant"`
	Owner    string            `json:"owner"`
	Upstream string            `json:"upstream"`
	AuthMode AuthMode          `json:"auth_mode"`
	Members  map[string]string `json:"members,omitempty"` // user id → role
	// APITokens are the gateway's API tokens by id (apitoken.go).
	APITokens map[string]APIToken `json:"api_tokens,omitempty"`
	Allowlist []string            `json:"allowlist,omitempty"` // CIDRs; empty means any address
	Skills    SkillRules          `json:"skills"`
	// TokenHash is SHA-256 of the gateway token, compared in constant time.
	TokenHash []byte `json:"token_hash"`
	// TokenSealed is the gateway token sealed by the keystore for upstream use.
	TokenSealed []byte    `json:"token_sealed"`
	Created     time.Time `json:"created"`
	Revision    uint64    `json:"revision"`
}
