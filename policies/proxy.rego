# Proxy traffic: HTTP requests and WebSocket messages moltgate forwards to a tenant gateway.
#
# Read it top to bottom: who is asking (proxy_decision), then, for that caller, the refusals
# in order, then the allow. The first refusal that applies is the answer:
#
#   anyone        ip_not_allowed (anonymous callers too) > unauthenticated 401 >
#                 unknown_gateway 404
#   a member      not_a_member > role_forbids (the action, then admin routes and owner-only
#                 tools) > owner_only > tool_missing > tool_denied > owner_only (host commands)
#   the owner     second_factor_required (owner methods and routes) > tool_missing >
#                 tool_denied > second_factor_required (host commands)
#   a gateway     wrong_gateway > token_forbids > owner_only > tool_missing > tool_denied >
#   token         owner_only (host commands)
#   an API token  wrong_gateway > then as a member holding the token's role > unknown_token
#                 (revoked) 401
#
# The allowlist and the tool rules come before every allow, so they bind owners and gateway
# tokens too. Platform admins get nothing here: tenant isolation.
#
# This is the hot path: every request is decided here. Each rule starts with the equality
# that selects it (the subject's kind, the action), which OPA's rule index checks before
# evaluating anything, so a request walks only the refusals that can apply to it.
package moltgate.authz

# proxy_decision: who is asking. The gateway record is looked up once and handed on.
proxy_decision := user_decision(gw) if {
	input.subject.kind == "user"
	input.subject.id != "" # an empty id must never match an owner or member entry
	gw := data.gateways[input.gateway.id]
} else := token_decision(gw) if {
	input.subject.kind == "gateway_token"
	input.subject.gateway != ""
	gw := data.gateways[input.gateway.id]
} else := api_token_decision(gw) if {
	input.subject.kind == "api_token"
	input.subject.gateway != ""
	gw := data.gateways[input.gateway.id]
} else := {"allow": false, "reason": "ip_not_allowed", "status": 403} if {
	# The allowlist needs no identity, so it binds before one is asked for: an anonymous
	# WebSocket upgrade refused only as unauthenticated is held by moltgate until its connect
	# request identifies it, and one from outside the allowlist must get no socket at all.
	input.subject.kind == "anonymous"
	gw := data.gateways[input.gateway.id]
	gw.allowlist != [] # an open gateway skips the address match
	not ip_allowed_on(gw)
} else := {"allow": false, "reason": "unauthenticated", "status": 401} if {
	not authenticated
} else := {"allow": false, "reason": "unknown_gateway", "status": 404} if {
	not gateway_known
} else := {"allow": false, "reason": "denied", "status": 403}

# The admin token and any other kind of subject ends in the final "denied" above.

# user_decision(gw): a signed-in user on a known gateway: its owner, a member, or nobody.
user_decision(gw) := {"allow": false, "reason": "ip_not_allowed", "status": 403} if {
	gw.allowlist != [] # an open gateway skips the address match
	not ip_allowed_on(gw)
} else := owner_decision(gw) if {
	gw.owner == input.subject.id
} else := member_decision(gw, grant, "member") if {
	grant := data.roles[gw.members[input.subject.id]]
	input.action in grant.actions
} else := {"allow": false, "reason": "role_forbids", "status": 403} if {
	gw.members[input.subject.id] # the role does not list the action, or is not defined
} else := {"allow": false, "reason": "not_a_member", "status": 403}

# owner_decision(gw): the gateway's owner may do anything, with every operator scope; but
# what the gateway keeps for its owner (an owner route, an owner method in tool form,
# data.ws.owner_tools, or a host command) needs a fresh second factor, and the gateway's
# skill rules bind the owner too.
owner_decision(gw) := {"allow": false, "reason": "second_factor_required", "status": 403} if {
	input.action == "http.write" # reads, the common case, skip the route match
	strings.any_prefix_match(route, data.http.owner_prefixes)
	not second_factor_fresh
} else := {"allow": false, "reason": "second_factor_required", "status": 403} if {
	input.action == "tools.invoke"
	input.request.tool in data.ws.owner_tools
	not second_factor_fresh
} else := {"allow": false, "reason": refusal, "status": 403} if {
	input.action == "tools.invoke"
	refusal := tool_refusal(gw)
} else := {"allow": false, "reason": "second_factor_required", "status": 403} if {
	input.action == "tools.invoke"
	host_command(gw, input.request.tool)
	not second_factor_fresh
} else := {"allow": true, "reason": "owner", "scopes": ["operator.read", "operator.write", "operator.admin"]}

# member_decision(gw, grant, who): a member, not the owner, whose role (grant,
# data.roles[role]) lists the action: what the gateway keeps for its owner or for
# operator.admin stays theirs. who is the allow's reason: "member", or "api_token" for an
# API token, which acts with its role as a member does.
member_decision(gw, grant, who) := {"allow": false, "reason": "role_forbids", "status": 403} if {
	# A route the gateway reserves for operator.admin, or runs as its owner; in token mode
	# it sees every caller as its owner, so the rule is kept here: members need http.admin.
	not "http.admin" in grant.actions
	strings.any_prefix_match(route, data.http.admin_prefixes)
} else := {"allow": false, "reason": "owner_only", "status": 403} if {
	input.action == "http.write"
	strings.any_prefix_match(route, data.http.owner_prefixes)
} else := {"allow": false, "reason": "role_forbids", "status": 403} if {
	# A tool the gateway keeps for its owner (data.http.owner_only_tools). Over HTTP, with
	# its shared token, it runs every tool as the owner's; on a socket only an admin's call
	# is. Members need http.admin.
	input.action == "tools.invoke"
	input.protocol == "http"
	input.request.tool in data.http.owner_only_tools
	not "http.admin" in grant.actions
} else := {"allow": false, "reason": "owner_only", "status": 403} if {
	# A tool that is an owner method in another form (data.ws.owner_tools), held as the
	# method is on a socket.
	input.action == "tools.invoke"
	input.request.tool in data.ws.owner_tools
} else := {"allow": false, "reason": refusal, "status": 403} if {
	input.action == "tools.invoke"
	refusal := tool_refusal(gw)
} else := {"allow": false, "reason": "owner_only", "status": 403} if {
	# A host-command tool (data.ws.host_command_tools: exec, process) runs commands on the
	# tenant's VM: the owner's, with a fresh second factor, unless skills.allow lists it.
	input.action == "tools.invoke"
	host_command(gw, input.request.tool)
} else := {"allow": true, "reason": who, "scopes": object.get(grant, "scopes", [])}

# token_decision(gw): a gateway token, on its own gateway, for what a token may do; what the
# gateway keeps for its owner is not a token's.
token_decision(gw) := {"allow": false, "reason": "ip_not_allowed", "status": 403} if {
	gw.allowlist != [] # an open gateway skips the address match
	not ip_allowed_on(gw)
} else := {"allow": false, "reason": "wrong_gateway", "status": 403} if {
	input.subject.gateway != input.gateway.id
} else := {"allow": false, "reason": "token_forbids", "status": 403} if {
	not input.action in {"http.read", "http.write", "tools.invoke"} # what a token may do
} else := {"allow": false, "reason": "owner_only", "status": 403} if {
	input.action == "http.write"
	strings.any_prefix_match(route, data.http.owner_prefixes)
} else := {"allow": false, "reason": "owner_only", "status": 403} if {
	input.action == "tools.invoke"
	input.request.tool in data.ws.owner_tools # an owner method in tool form
} else := {"allow": false, "reason": refusal, "status": 403} if {
	input.action == "tools.invoke"
	refusal := tool_refusal(gw)
} else := {"allow": false, "reason": "owner_only", "status": 403} if {
	input.action == "tools.invoke"
	host_command(gw, input.request.tool)
} else := {"allow": true, "reason": "gateway_token", "scopes": ["operator.read", "operator.write", "operator.admin"]}

# api_token_decision(gw): an API token, on its own gateway, acts as a member holding the
# token's role (data.gateways[id].api_tokens[token id].role). A token revoked since the
# request was identified is no longer in the record: refused as unknown.
api_token_decision(gw) := {"allow": false, "reason": "ip_not_allowed", "status": 403} if {
	gw.allowlist != [] # an open gateway skips the address match
	not ip_allowed_on(gw)
} else := {"allow": false, "reason": "wrong_gateway", "status": 403} if {
	input.subject.gateway != input.gateway.id
} else := member_decision(gw, grant, "api_token") if {
	grant := data.roles[gw.api_tokens[input.subject.id].role]
	input.action in grant.actions
} else := {"allow": false, "reason": "role_forbids", "status": 403} if {
	gw.api_tokens[input.subject.id] # the role does not list the action, or is not defined
} else := {"allow": false, "reason": "unknown_token", "status": 401}

# route is the request's route in lower case: input.request.route (the path the gateway
# routes by), else the path. The rules match it against route prefixes with
# strings.any_prefix_match. The prefixes are lower case (the engine refuses a set whose
# route prefixes are not, and test_route_prefixes_are_lower_case says so), so one match
# covers every spelling.
#
# data.http.admin_prefixes: where the gateway itself admits only operator.admin (the media
# of any session, channel avatars, workspace icons), or where, called with its shared token,
# it acts as its owner (the OpenAI-compatible endpoints run an agent turn whose sender is the
# owner, with the owner-only tools; on a socket only an admin's turn is). Any method.
#
# data.http.owner_prefixes: HTTP routes that reach the gateway's owner methods (the
# admin-http-rpc plugin's /api/v1/admin/rpc runs config, exec-approval and cron methods by
# name, on POST only), held as a WebSocket owner method is: the owner's alone, with a fresh
# second factor. Only writes are matched.
route := lower(input.request.route) if {
	input.request.route
} else := lower(input.request.path)

# ip_allowed_on(gw): the client address is inside one of the gateway's allowlist CIDRs
# (callers skip the match for an open gateway, gw.allowlist == []). moltgate passes
# client_ip as a valid address or "" (unknown); an unknown address, or an allowlist entry
# that is not a CIDR, matches nothing.
ip_allowed_on(gw) if {
	is_string(input.client_ip)
	input.client_ip != ""
	count(net.cidr_contains_matches(gw.allowlist, input.client_ip)) > 0
}

# tool_refusal(gw): why a tools.invoke call is refused, undefined when it is not. The tool
# must be named, not in skills.deny (deny always wins) and, when skills.allow is not empty,
# listed there.
tool_refusal(gw) := "tool_missing" if {
	not input.request.tool # absent
} else := "tool_missing" if {
	not is_string(input.request.tool)
} else := "tool_missing" if {
	input.request.tool == ""
} else := "tool_denied" if {
	input.request.tool in gw.skills.deny
} else := "tool_denied" if {
	gw.skills.allow != []
	not input.request.tool in gw.skills.allow
}

# host_command(gw, tool): tool runs commands on the gateway's host (data.ws.host_command_tools,
# the gateway's own runtime tools) and the gateway's skill rules do not list it explicitly in
# skills.allow, which hands it to every role that may invoke tools.
host_command(gw, tool) if {
	tool in data.ws.host_command_tools
	not tool in object.get(gw, ["skills", "allow"], []) # `not x in undefined` fails: no list lists nothing
}
