# Proxy traffic: HTTP requests and WebSocket messages moltgate forwards to a tenant gateway.
package moltgate.authz

# Actions a gateway token may perform on its own gateway.
token_actions := {"http.read", "http.write", "tools.invoke"}

# proxy_decision checks in a fixed order; the first refusal that applies is the answer.
# The network allowlist and the tool rules come before every allow, so they bind owners
# and gateway tokens too. Platform admins get nothing here: tenant isolation.
proxy_decision := {"allow": false, "reason": "unauthenticated", "status": 401} if {
	not authenticated
} else := {"allow": false, "reason": "unknown_gateway", "status": 404} if {
	not gateway_known
} else := {"allow": false, "reason": "ip_not_allowed", "status": 403} if {
	not ip_allowed
} else := {"allow": false, "reason": "denied", "status": 403} if {
	# admin tokens, and any kind this policy does not know, never reach a gateway.
	not input.subject.kind in {"user", "gateway_token"}
} else := {"allow": false, "reason": "wrong_gateway", "status": 403} if {
	input.subject.kind == "gateway_token"
	not own_token
} else := {"allow": false, "reason": "token_forbids", "status": 403} if {
	own_token
	not input.action in token_actions
} else := {"allow": false, "reason": "not_a_member", "status": 403} if {
	input.subject.kind == "user"
	not is_owner
	not is_member
} else := {"allow": false, "reason": "role_forbids", "status": 403} if {
	input.subject.kind == "user"
	not is_owner
	not role_allows
} else := {"allow": false, "reason": "tool_missing", "status": 403} if {
	input.action == "tools.invoke"
	not tool_named
} else := {"allow": false, "reason": "tool_denied", "status": 403} if {
	input.action == "tools.invoke"
	not tool_permitted
} else := {"allow": true, "reason": "owner", "scopes": full_scopes} if {
	is_owner
} else := {"allow": true, "reason": "gateway_token", "scopes": full_scopes} if {
	own_token
} else := {"allow": true, "reason": "member", "scopes": role_scopes} if {
	role_allows
}

# ip_allowed: the gateway has no allowlist, or the client address is inside one of its CIDRs.
# moltgate passes client_ip as a valid address or "" (unknown); an unknown address, or an
# allowlist entry that is not a CIDR, matches nothing.
ip_allowed if count(object.get(gateway, "allowlist", [])) == 0

ip_allowed if {
	is_string(input.client_ip)
	input.client_ip != ""
	count(net.cidr_contains_matches(gateway.allowlist, input.client_ip)) > 0
}

tool_named if {
	is_string(input.request.tool)
	input.request.tool != ""
}

# tool_permitted: deny always wins; a non-empty allow list admits only the names it lists.
tool_permitted if {
	not input.request.tool in object.get(gateway, ["skills", "deny"], [])
	tool_listed
}

tool_listed if count(object.get(gateway, ["skills", "allow"], [])) == 0

tool_listed if input.request.tool in gateway.skills.allow
