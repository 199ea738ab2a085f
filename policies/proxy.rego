# Proxy traffic: HTTP requests and WebSocket messages moltgate forwards to a tenant gateway.
#
# This is the hot path: every request is decided here, so the three allows are written as
# single rule bodies with their conditions inline (a helper rule costs about as much as
# ten comparisons). Refusals are only evaluated when no allow matched.
package moltgate.authz

# Actions a gateway token may perform on its own gateway.
token_actions := {"http.read", "http.write", "tools.invoke"}

# proxy_decision: the three ways to be allowed, then proxy_refusal. Each allow spells out
# every condition a refusal checks for that kind of subject (the network allowlist and the
# tool rules bind owners and gateway tokens too), so an allow means exactly "no refusal
# applies". Platform admins get nothing here: tenant isolation.
proxy_decision := {"allow": true, "reason": "owner", "scopes": ["operator.read", "operator.write", "operator.admin"]} if {
	gw := data.gateways[input.gateway.id]
	input.subject.kind == "user"
	input.subject.id != ""
	gw.owner == input.subject.id
	ip_allowed_on(gw)
	tool_allowed_on(gw)
} else := {"allow": true, "reason": "gateway_token", "scopes": ["operator.read", "operator.write", "operator.admin"]} if {
	gw := data.gateways[input.gateway.id]
	input.subject.kind == "gateway_token"
	input.subject.gateway == input.gateway.id
	input.action in token_actions
	ip_allowed_on(gw)
	tool_allowed_on(gw)
} else := {"allow": true, "reason": "member", "scopes": object.get(data.roles, [role, "scopes"], [])} if {
	gw := data.gateways[input.gateway.id]
	input.subject.kind == "user"
	input.subject.id != ""
	role := gw.members[input.subject.id]
	input.action in data.roles[role].actions
	ip_allowed_on(gw)
	tool_allowed_on(gw)
} else := proxy_refusal

# proxy_refusal: why a request no allow matched is refused; the first match wins. Written
# inline like the allows, so a refusal costs little more than an allow.
#
# Mind OPA's negation: `not f(x)` is itself undefined (so the branch fails) when the
# argument x is undefined. Negate a helper rule instead (gateway_known, role_grants), or
# make sure the argument is defined (the gateway is known past the second branch).
proxy_refusal := {"allow": false, "reason": "unauthenticated", "status": 401} if {
	not authenticated
} else := {"allow": false, "reason": "unknown_gateway", "status": 404} if {
	not gateway_known
} else := {"allow": false, "reason": "ip_not_allowed", "status": 403} if {
	not ip_allowed_on(data.gateways[input.gateway.id])
} else := {"allow": false, "reason": "denied", "status": 403} if {
	# admin tokens, and any kind this policy does not know, never reach a gateway.
	not input.subject.kind in {"user", "gateway_token"}
} else := {"allow": false, "reason": "wrong_gateway", "status": 403} if {
	input.subject.kind == "gateway_token"
	input.subject.gateway != input.gateway.id
} else := {"allow": false, "reason": "token_forbids", "status": 403} if {
	input.subject.kind == "gateway_token"
	not input.action in token_actions
} else := {"allow": false, "reason": "not_a_member", "status": 403} if {
	input.subject.kind == "user"
	gw := data.gateways[input.gateway.id]
	gw.owner != input.subject.id
	not gw.members[input.subject.id]
} else := {"allow": false, "reason": "role_forbids", "status": 403} if {
	input.subject.kind == "user"
	gw := data.gateways[input.gateway.id]
	gw.owner != input.subject.id
	role := gw.members[input.subject.id]
	not role_grants(role)
} else := {"allow": false, "reason": "tool_missing", "status": 403} if {
	input.action == "tools.invoke"
	not tool_named
} else := {"allow": false, "reason": "tool_denied", "status": 403} if {
	input.action == "tools.invoke"
	not tool_allowed_on(data.gateways[input.gateway.id])
} else := {"allow": false, "reason": "denied", "status": 403}

# ip_allowed_on(gw): the gateway has no allowlist, or the client address is inside one of
# its CIDRs. moltgate passes client_ip as a valid address or "" (unknown); an unknown
# address, or an allowlist entry that is not a CIDR, matches nothing.
ip_allowed_on(gw) if count(object.get(gw, "allowlist", [])) == 0

ip_allowed_on(gw) if {
	is_string(input.client_ip)
	input.client_ip != ""
	count(net.cidr_contains_matches(gw.allowlist, input.client_ip)) > 0
}

# tool_allowed_on(gw): the tool rules pass. They only concern tools.invoke: the tool must
# be named, not in skills.deny (deny always wins) and, when skills.allow is not empty, in it.
tool_allowed_on(_) if input.action != "tools.invoke"

tool_allowed_on(gw) if {
	input.action == "tools.invoke"
	tool_named
	not input.request.tool in object.get(gw, ["skills", "deny"], [])
	tool_listed_on(gw)
}

tool_listed_on(gw) if count(object.get(gw, ["skills", "allow"], [])) == 0

tool_listed_on(gw) if input.request.tool in gw.skills.allow

tool_named if {
	is_string(input.request.tool)
	input.request.tool != ""
}
