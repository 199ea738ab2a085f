# WebSocket messages: each client request of the OpenClaw protocol is decided on its own,
# with input.action "ws.call" and input.ws {method, tool, skill}.
#
# A method falls in one class (data.ws, ws.json): "owner" methods (the operator terminal,
# exec approvals, device and node pairing, secrets, installing plugins, which is running
# code in the gateway's VM) are the owner's alone and need a second
# factor verified within data.ws.second_factor_max_age_minutes (Clerk's fva); "admin"
# methods change configuration, skills, plugins, agents, cron and approvals; "operate"
# methods chat and manage sessions; "read" methods only read. Members need "ws.<class>" in
# their role's actions. A method of a family this policy does not know (not in
# data.ws.families) is "admin", whatever its verb: "vault.list" of a family added to the
# gateway tomorrow may list secrets, so a new gateway feature is closed until someone
# classifies it.
package moltgate.authz

# ws_class: data.ws.methods names single methods' classes; data.ws.families gives a
# family's class (the method's first dot-separated part; see ws_family_class). A method of
# a family this policy does not know is "admin". Lookups by key: this runs for every message.
ws_class := "owner" if {
	strings.any_prefix_match(input.ws.method, data.ws.owner_prefixes)
} else := "owner" if {
	# A tool that is an owner method in another form (data.ws.owner_tools: the secrets tool
	# lists and deletes the secret store, as secrets.* does; the terminal tool reads and
	# types into the operator's terminals, as terminal.* does).
	input.ws.tool in data.ws.owner_tools
} else := c if {
	c := data.ws.methods[input.ws.method]
} else := c if {
	parts := split(input.ws.method, ".")
	c := ws_family_class(data.ws.families[parts[0]], parts[count(parts) - 1])
} else := "admin"

# ws_family_class(family, verb): the class of a method of a known family whose class is
# family and whose last part is verb: "sensitive" families are admin whatever the verb; in
# any other a reading verb (data.ws.read_verbs) makes the method "read", else it takes the
# family's class ("operate" or "admin"; anything else is undefined, so "admin" above).
ws_family_class("sensitive", _) := "admin"

ws_family_class(family, verb) := "read" if {
	family != "sensitive"
	data.ws.read_verbs[verb] == true
} else := family if {
	family in {"operate", "admin"}
}

# second_factor_fresh: the session's second factor was verified recently enough.
second_factor_fresh if {
	ages := input.subject.factor_ages
	count(ages) >= 2
	ages[1] >= 0
	ages[1] <= data.ws.second_factor_max_age_minutes
}

# ws_decision: the socket itself must still be allowed (as its upgrade was: the same
# refusals as HTTP, allowlist included), then the method's class decides.
#
# Hot path: every client message of every socket comes here. As in proxy.rego, the gateway
# record is looked up once and handed to a per-subject-kind function whose else-chain
# checks refusals in priority order; the socket's own refusals are written out rather than
# taken from proxy_decision `with` another action, which costs OPA three times as much.
ws_decision := ws_user_decision(gw) if {
	input.subject.kind == "user"
	input.subject.id != "" # an empty id must never match an owner or member entry
	gw := data.gateways[input.gateway.id]
} else := ws_token_decision(gw) if {
	input.subject.kind == "gateway_token"
	input.subject.gateway != ""
	gw := data.gateways[input.gateway.id]
} else := ws_api_token_decision(gw) if {
	input.subject.kind == "api_token"
	input.subject.gateway != ""
	gw := data.gateways[input.gateway.id]
} else := proxy_decision

# (The last branch: unauthenticated, unknown gateway, or denied; none depends on the action.)

# ws_user_decision(gw): a signed-in user on a known gateway: its owner, a member whose role
# lets them hold the socket at all ("http.read"), or nobody.
ws_user_decision(gw) := {"allow": false, "reason": "ip_not_allowed", "status": 403} if {
	gw.allowlist != [] # an open gateway skips the address match
	not ip_allowed_on(gw)
} else := ws_owner_decision(gw) if {
	gw.owner == input.subject.id
} else := ws_member_decision(gw, grant.actions) if {
	grant := data.roles[gw.members[input.subject.id]]
	"http.read" in grant.actions
} else := {"allow": false, "reason": "role_forbids", "status": 403} if {
	gw.members[input.subject.id] # the role does not list http.read, or is not defined
} else := {"allow": false, "reason": "not_a_member", "status": 403}

# ws_owner_decision(gw): the owner may call every method, but owner methods, host commands
# and configuration writes that open a channel need a fresh second factor, and the
# gateway's skill rules bind the owner too.
ws_owner_decision(gw) := {"allow": false, "reason": "second_factor_required", "status": 403} if {
	ws_class == "owner"
	not second_factor_fresh
} else := {"allow": false, "reason": refusal, "status": 403} if {
	refusal := ws_name_refusal(gw)
} else := {"allow": false, "reason": "second_factor_required", "status": 403} if {
	host_command(gw, input.ws.tool)
	not second_factor_fresh
} else := {"allow": false, "reason": "second_factor_required", "status": 403} if {
	channel_opening
	not second_factor_fresh
} else := {"allow": true, "reason": ws_class}

# ws_member_decision(gw, actions): a member whose role (its actions, which list http.read)
# lets them hold the socket: owner methods, host commands and configuration writes that
# open a channel are the owner's; any other method needs "ws.<class>" in the role. The
# allow checks the role again: it must never rest on the refusals alone (with no allow,
# ws_user_decision goes on to role_forbids).
ws_member_decision(gw, actions) := {"allow": false, "reason": "owner_only", "status": 403} if {
	ws_class == "owner"
} else := {"allow": false, "reason": "role_forbids", "status": 403, "missing_scope": object.get(data.ws.class_scopes, ws_class, "operator.admin")} if {
	not concat("", ["ws.", ws_class]) in actions
} else := {"allow": false, "reason": refusal, "status": 403} if {
	refusal := ws_name_refusal(gw)
} else := {"allow": false, "reason": "owner_only", "status": 403} if {
	host_command(gw, input.ws.tool)
} else := {"allow": false, "reason": "owner_only", "status": 403} if {
	channel_opening
} else := {"allow": true, "reason": ws_class} if {
	concat("", ["ws.", ws_class]) in actions
}

# ws_token_decision(gw): a gateway token on a known gateway; everything but owner methods.
ws_token_decision(gw) := {"allow": false, "reason": "ip_not_allowed", "status": 403} if {
	gw.allowlist != [] # an open gateway skips the address match
	not ip_allowed_on(gw)
} else := {"allow": false, "reason": "wrong_gateway", "status": 403} if {
	input.subject.gateway != input.gateway.id
} else := {"allow": false, "reason": "owner_only", "status": 403} if {
	ws_class == "owner"
} else := {"allow": false, "reason": refusal, "status": 403} if {
	refusal := ws_name_refusal(gw)
} else := {"allow": false, "reason": "owner_only", "status": 403} if {
	host_command(gw, input.ws.tool)
} else := {"allow": false, "reason": "owner_only", "status": 403} if {
	channel_opening
} else := {"allow": true, "reason": ws_class}

# ws_api_token_decision(gw): an API token on its own gateway, as a member holding the
# token's role; a token revoked while its socket is open is refused as unknown, and the
# socket closed.
ws_api_token_decision(gw) := {"allow": false, "reason": "ip_not_allowed", "status": 403} if {
	gw.allowlist != [] # an open gateway skips the address match
	not ip_allowed_on(gw)
} else := {"allow": false, "reason": "wrong_gateway", "status": 403} if {
	input.subject.gateway != input.gateway.id
} else := ws_member_decision(gw, grant.actions) if {
	grant := data.roles[gw.api_tokens[input.subject.id].role]
	"http.read" in grant.actions
} else := {"allow": false, "reason": "role_forbids", "status": 403} if {
	gw.api_tokens[input.subject.id] # the role does not list http.read, or is not defined
} else := {"allow": false, "reason": "unknown_token", "status": 401}

# ws_name_refusal(gw): why the tool or skill a message names is refused, undefined when it
# is not (or names none): deny always wins, and a non-empty allow list must list it.
ws_name_refusal(gw) := "tool_denied" if {
	ws_name_denied(gw, input.ws.tool)
} else := "skill_denied" if {
	ws_name_denied(gw, input.ws.skill)
}

# ws_name_denied(gw, name): name is a name (a non-empty string) that skills.deny lists, or
# that a non-empty skills.allow does not.
ws_name_denied(gw, name) if {
	is_string(name)
	name != ""
	name in object.get(gw, ["skills", "deny"], [])
}

ws_name_denied(gw, name) if {
	is_string(name)
	name != ""
	gw.skills.allow != []
	not name in gw.skills.allow
}

# channel_opening: a configuration write (data.ws.config_write_methods) opens a messaging
# channel to more people. moltgate gives the policy the channels section of the config the
# message writes (input.ws.channels, the gateway's channels.<id> objects: whatsapp, telegram,
# discord, slack, signal, imessage, ...) and cannot see the current config, so a write counts
# as opening unless every part of it tightens: a DM or group policy of "open", "enabled": true,
# a non-empty allow list (allowFrom, groupAllowFrom, users, roles, allowedChannels) or a new
# entry under accounts, guilds, groups, channels, direct or topics that is not disabled.
# A write whose config moltgate could not read (input.ws.config_unreadable) counts as opening.
channel_opening if {
	input.ws.method in data.ws.config_write_methods
	input.ws.config_unreadable == true
}

channel_opening if {
	input.ws.method in data.ws.config_write_methods
	walk(input.ws.channels, [path, value])
	count(path) > 0
	channel_opens(path, value)
}

channel_opens(path, value) if {
	path[count(path) - 1] in {"dmPolicy", "groupPolicy", "policy"}
	value in data.ws.channel_open_policies
}

channel_opens(path, true) if path[count(path) - 1] == "enabled"

channel_opens(path, value) if {
	path[count(path) - 1] in data.ws.channel_allow_keys
	count(value) > 0
}

channel_opens(path, value) if {
	count(path) >= 3 # channels.<id>.<container>.<entry>: not the channel itself
	path[count(path) - 2] in data.ws.channel_entry_keys
	is_object(value)
	object.get(value, "enabled", true) != false
}
