package policies

// Subject kinds, as input.subject.kind.
const (
	SubjectAnonymous    = "anonymous"     // no credential presented
	SubjectUser         = "user"          // a verified Clerk session
	SubjectGatewayToken = "gateway_token" // a machine client holding one gateway's token
	SubjectAPIToken     = "api_token"     // a machine client holding one of a gateway's API tokens
	SubjectAdminToken   = "admin_token"   // an operator holding the admin token (admin listener only)
)

// Protocols, as input.protocol.
const (
	ProtocolHTTP  = "http"
	ProtocolWS    = "ws"
	ProtocolAdmin = "admin"
)

// Input is what a policy sees as input for one decision. Field names in Rego are the json tags.
type Input struct {
	Subject  Subject    `json:"subject"`
	Gateway  GatewayRef `json:"gateway"`
	Request  Request    `json:"request"`
	ClientIP string     `json:"client_ip"`
	Protocol string     `json:"protocol"`
	// Action names what is being attempted, e.g. "http.read", "tools.invoke", "admin.member.write".
	Action string `json:"action"`
	// WS describes one WebSocket message; nil for plain HTTP.
	WS *WSMessage `json:"ws,omitempty"`
}

// Subject is the identified caller. It never carries a credential.
type Subject struct {
	Kind      string `json:"kind"`
	ID        string `json:"id"`
	SessionID string `json:"session_id,omitempty"`
	OrgID     string `json:"org_id,omitempty"`
	OrgRole   string `json:"org_role,omitempty"`
	// FactorAges is Clerk's fva claim: minutes since the first and second factor were verified,
	// -1 where never. Empty when unknown.
	FactorAges []int `json:"factor_ages,omitempty"`
	// Gateway is the gateway a gateway_token or api_token subject belongs to. An api_token
	// subject's ID is the token's id (data.gateways[gateway].api_tokens[id]).
	Gateway string `json:"gateway,omitempty"`
}

// GatewayRef names the gateway a request is for; its record is data.gateways[id].
type GatewayRef struct {
	ID     string `json:"id"`
	Tenant string `json:"tenant,omitempty"`
}

// Request is the HTTP side of the input, after normalisation.
type Request struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	// Route is the path the gateway routes the request by: Path with the gateway's
	// capability prefix (/__openclaw__/cap/<capability>) removed. Empty means Path.
	Route string `json:"route,omitempty"`
	Host  string `json:"host"`
	// Tool is the tool named in a POST /tools/invoke body, empty otherwise.
	Tool string `json:"tool,omitempty"`
	// Country is Cloudflare's CF-IPCountry (two upper-case letters, "XX" or "T1"), taken
	// only from a peer in trusted_proxies; empty otherwise.
	Country string `json:"country,omitempty"`
}

// WSMessage is one client→gateway frame of the OpenClaw protocol.
type WSMessage struct {
	Method string `json:"method"`
	Tool   string `json:"tool,omitempty"`
	Skill  string `json:"skill,omitempty"`
	// Channels, for a configuration write (config.set, config.patch, config.apply), is the
	// "channels" section of the config it writes, as decoded JSON; nil when it has none.
	Channels any `json:"channels,omitempty"`
	// ConfigUnreadable marks a configuration write whose config moltgate could not read
	// (not JSON, or not an object): the policy must assume it opens channels.
	ConfigUnreadable bool `json:"config_unreadable,omitempty"`
}

// Decision is the result of data.moltgate.authz.decision.
type Decision struct {
	Allow  bool   `json:"allow"`
	Reason string `json:"reason"`
	// Status is the HTTP status of a refusal (401, 403, ...); 0 means 403.
	Status int `json:"status,omitempty"`
	// Scopes caps the OpenClaw operator scopes sent upstream in trusted-proxy mode.
	Scopes []string `json:"scopes,omitempty"`
	// MissingScope, on a WebSocket method refused for the member's role, is the OpenClaw
	// operator scope the method's class needs: the relay answers in the gateway's own
	// "missing scope" shape, which the Control UI shows as such instead of retrying.
	MissingScope string `json:"missing_scope,omitempty"`
	// ID identifies this decision (NewDecisionID), also for fail-closed errors: refusals
	// carry it (X-Moltgate-Decision-Id), and so do the audit and decision-log events.
	ID string `json:"id,omitempty"`
	// Revision is the revision of the policy set that decided (Engine.Revision).
	Revision string `json:"revision,omitempty"`
	// Reused marks a decision the engine took from its exact memo instead of evaluating
	// it (the same policy revision, data and every input value the rules read), or one a
	// socket reused; a reused decision still gets an ID of its own.
	Reused bool `json:"reused"`
}
