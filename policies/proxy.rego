# Proxy traffic: HTTP requests and WebSocket messages moltgate forwards to a tenant gateway.
#
# This is the hot path: every request is decided here. The gateway record is looked up once
# and handed to a per-subject-kind function, whose else-chain checks refusals in priority
# order and ends in the allow; a user's request then takes the member's path or the owner's,
# each walking only the refusals that can apply to it. Conditions are written inline because, in OPA, every rule or
# function evaluation costs about as much as ten comparisons.
#
# Refusal order (first match wins):
#   (anonymous callers) ip_not_allowed > unauthenticated 401 > unknown_gateway 404 >
#   ip_not_allowed > (users) not_a_member >
#   role_forbids (the action, then admin routes) > owner_only > second_factor_required >
#   (tokens) wrong_gateway > token_forbids > owner_only > tool_missing > tool_denied.
# The allowlist and the tool rules come before every allow, so they bind owners and
# gateway tokens too. Platform admins get nothing here: tenant isolation.
package moltgate.authz

# Actions a gateway token may perform on its own gateway.
token_actions := {"http.read", "http.write", "tools.invoke"}

proxy_decision := user_decision(gw) if {
	input.subject.kind == "user"
	is_string(input.subject.id)
	input.subject.id != ""
	gw := data.gateways[input.gateway.id]
	is_object(gw)
} else := token_decision(gw) if {
	input.subject.kind == "gateway_token"
	is_string(input.subject.gateway)
	input.subject.gateway != ""
	gw := data.gateways[input.gateway.id]
	is_object(gw)
} else := {"allow": false, "reason": "ip_not_allowed", "status": 403} if {
	# The allowlist needs no identity, so it binds before one is asked for: an anonymous
	# WebSocket upgrade refused only as unauthenticated is held by moltgate until its connect
	# request identifies it, and one from outside the allowlist must get no socket at all.
	input.subject.kind == "anonymous"
	gw := data.gateways[input.gateway.id]
	is_object(gw)
	object.get(gw, "allowlist", []) != [] # an open gateway skips the address match
	not ip_allowed_on(gw)
} else := {"allow": false, "reason": "unauthenticated", "status": 401} if {
	not authenticated
} else := {"allow": false, "reason": "unknown_gateway", "status": 404} if {
	not gateway_known
} else := {"allow": false, "reason": "denied", "status": 403}

# The admin token and any other kind of subject ends in the final "denied" above.

# user_decision(gw): a signed-in user on a known gateway. Members and owners take separate
# paths, so a request walks only the refusals that can apply to its caller.
user_decision(gw) := {"allow": false, "reason": "ip_not_allowed", "status": 403} if {
	object.get(gw, "allowlist", []) != [] # an open gateway skips the address match
	not ip_allowed_on(gw)
} else := member_decision(gw, role) if {
	gw.owner != input.subject.id
	role := gw.members[input.subject.id]
	role != false
} else := {"allow": false, "reason": "not_a_member", "status": 403} if {
	gw.owner != input.subject.id
} else := {"allow": false, "reason": refusal, "status": 403} if {
	# The owner (or, on a malformed record without one, anybody).
	refusal := held_refusal(gw)
} else := {"allow": true, "reason": "owner", "scopes": ["operator.read", "operator.write", "operator.admin"]} if {
	gw.owner == input.subject.id
} else := member_allow(role) if {
	role := gw.members[input.subject.id]
}

# member_decision(gw, role): a member, not the owner: the role must list the action, and
# what the gateway keeps for its owner or for operator.admin stays theirs.
member_decision(gw, role) := {"allow": false, "reason": "role_forbids", "status": 403} if {
	not input.action in object.get(data.roles, [role, "actions"], [])
} else := {"allow": false, "reason": "role_forbids", "status": 403} if {
	# A route the gateway reserves for operator.admin, or runs as its owner; in token mode
	# it sees every caller as its owner, so the rule is kept here: members need http.admin.
	admin_route
	not "http.admin" in object.get(data.roles, [role, "actions"], [])
} else := member_tool_decision(gw, role) if {
	input.action == "tools.invoke"
} else := {"allow": false, "reason": "owner_only", "status": 403} if {
	input.action == "http.write"
	owner_route
} else := member_allow(role)

# member_tool_decision(gw, role): a member's tools.invoke call.
member_tool_decision(gw, role) := {"allow": false, "reason": "role_forbids", "status": 403} if {
	# A tool the gateway keeps for its owner (data.http.owner_only_tools). Over HTTP, with
	# its shared token, it runs every tool as the owner's; on a socket only an admin's call
	# is. Members need http.admin.
	input.protocol == "http"
	input.request.tool in data.http.owner_only_tools
	not "http.admin" in object.get(data.roles, [role, "actions"], [])
} else := {"allow": false, "reason": "owner_only", "status": 403} if {
	# A tool that is an owner method in another form (data.ws.owner_tools), held as the
	# method is on a socket.
	input.request.tool in data.ws.owner_tools
} else := {"allow": false, "reason": refusal, "status": 403} if {
	refusal := tool_refusal(gw)
} else := {"allow": false, "reason": "owner_only", "status": 403} if {
	# A host-command tool (data.ws.host_command_tools: exec, process) runs commands on the
	# tenant's VM: the owner's, with a fresh second factor, unless skills.allow lists it.
	host_command(gw, input.request.tool)
} else := member_allow(role)

# member_allow(role): the allow of a member whose role lists the action. The role is checked
# here again: an allow must never rest on the refusals alone.
member_allow(role) := {"allow": true, "reason": "member", "scopes": scopes} if {
	input.action in data.roles[role].actions
	scopes := object.get(data.roles[role], "scopes", [])
}

# held_refusal(gw): why the owner's own request is refused, undefined when it is not: an
# owner method (data.ws.owner_tools), owner route or host command needs a fresh second
# factor, and the gateway's skill rules bind the owner too.
held_refusal(gw) := "second_factor_required" if {
	input.action == "tools.invoke"
	input.request.tool in data.ws.owner_tools
	not second_factor_fresh
} else := "second_factor_required" if {
	input.action == "http.write" # first: reads, the common case, skip the route match
	owner_route
	not second_factor_fresh
} else := refusal if {
	input.action == "tools.invoke"
	refusal := tool_refusal(gw)
} else := "second_factor_required" if {
	input.action == "tools.invoke"
	host_command(gw, input.request.tool)
	not second_factor_fresh
}

# token_decision(gw): a gateway token on a known gateway.
token_decision(gw) := {"allow": false, "reason": "ip_not_allowed", "status": 403} if {
	object.get(gw, "allowlist", []) != [] # an open gateway skips the address match
	not ip_allowed_on(gw)
} else := {"allow": false, "reason": "wrong_gateway", "status": 403} if {
	input.subject.gateway != input.gateway.id
} else := {"allow": false, "reason": "token_forbids", "status": 403} if {
	not input.action in token_actions
} else := {"allow": false, "reason": "owner_only", "status": 403} if {
	input.action == "http.write"
	owner_route
} else := {"allow": false, "reason": "owner_only", "status": 403} if {
	input.action == "tools.invoke"
	input.request.tool in data.ws.owner_tools
} else := {"allow": false, "reason": refusal, "status": 403} if {
	input.action == "tools.invoke"
	refusal := tool_refusal(gw)
} else := {"allow": false, "reason": "owner_only", "status": 403} if {
	input.action == "tools.invoke"
	host_command(gw, input.request.tool)
} else := {"allow": true, "reason": "gateway_token", "scopes": ["operator.read", "operator.write", "operator.admin"]}

# admin_route: the request goes where the gateway itself admits only operator.admin (the
# media of any session, channel avatars, workspace icons), or where, called with its shared
# token, it acts as its owner (the OpenAI-compatible endpoints run an agent turn whose sender
# is the owner, with the owner-only tools; on a socket only an admin's turn is). Its route
# (the path the gateway routes by, input.request.route, else the path) starts with one of
# data.http.admin_prefixes, compared in lower case; any method.
admin_route if {
	route := lower(object.get(input.request, "route", input.request.path))
	some prefix in data.http.admin_prefixes
	startswith(route, lower(prefix))
}

# owner_route: the request goes to an HTTP route that reaches the gateway's owner methods
# (data.http.owner_prefixes: the admin-http-rpc plugin's /api/v1/admin/rpc runs config,
# exec-approval and cron methods by name, on POST only). It is held as a WebSocket owner
# method is: the owner's alone, with a fresh second factor. Only writes are matched.
owner_route if {
	route := lower(object.get(input.request, "route", input.request.path))
	some prefix in data.http.owner_prefixes
	startswith(route, lower(prefix))
}

# ip_allowed_on(gw): the gateway has no allowlist, or the client address is inside one of
# its CIDRs. moltgate passes client_ip as a valid address or "" (unknown); an unknown
# address, or an allowlist entry that is not a CIDR, matches nothing.
ip_allowed_on(gw) if count(object.get(gw, "allowlist", [])) == 0

ip_allowed_on(gw) if {
	is_string(input.client_ip)
	input.client_ip != ""
	count(net.cidr_contains_matches(gw.allowlist, input.client_ip)) > 0
}

# tool_refusal(gw): why a tools.invoke call is refused, undefined when it is not. The tool
# must be named, not in skills.deny (deny always wins) and, when skills.allow is not empty,
# listed there.
tool_refusal(gw) := "tool_missing" if {
	not tool_named
} else := "tool_denied" if {
	input.request.tool in object.get(gw, ["skills", "deny"], [])
} else := "tool_denied" if {
	count(object.get(gw, ["skills", "allow"], [])) > 0
	not input.request.tool in gw.skills.allow
}

tool_named if {
	is_string(input.request.tool)
	input.request.tool != ""
}

# host_command(gw, tool): tool runs commands on the gateway's host (data.ws.host_command_tools,
# the gateway's own runtime tools) and the gateway's skill rules do not list it explicitly in
# skills.allow, which hands it to every role that may invoke tools.
host_command(gw, tool) if {
	tool in data.ws.host_command_tools
	not tool in object.get(gw, ["skills", "allow"], [])
}
