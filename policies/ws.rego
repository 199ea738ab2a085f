# WebSocket messages: each client request of the OpenClaw protocol is decided on its own,
# with input.action "ws.call" and input.ws {method, tool, skill}.
#
# A method falls in one class (data.ws, ws.json): "owner" methods (the operator terminal,
# exec approvals, device and node pairing, secrets) are the owner's alone and need a second
# factor verified within data.ws.second_factor_max_age_minutes (Clerk's fva); "admin"
# methods change configuration, skills, plugins, agents, cron and approvals; "operate"
# methods chat and manage sessions; "read" methods only read. Members need "ws.<class>" in
# their role's actions. A method of a family this policy does not know (in none of the
# family lists of ws.json) is "admin", whatever its verb: a new gateway feature is closed
# until someone classifies it.
package moltgate.authz

ws_family := split(input.ws.method, ".")[0]

ws_verb := v if {
	parts := split(input.ws.method, ".")
	v := parts[count(parts) - 1]
}

ws_class := "owner" if {
	some p in data.ws.owner_prefixes
	startswith(input.ws.method, p)
} else := "operate" if {
	input.ws.method in data.ws.operate_methods
} else := "admin" if {
	ws_family in data.ws.sensitive_families
} else := "read" if {
	ws_read
} else := "operate" if {
	ws_family in data.ws.operate_families
} else := "admin"

ws_read if input.ws.method in data.ws.read_methods

# A reading verb counts only in a family the policy knows: "vault.list" of a family added
# to the gateway tomorrow may list secrets, and stays admin until someone classifies it.
ws_read if {
	ws_verb in data.ws.read_verbs
	ws_family_known
}

ws_family_known if ws_family in data.ws.operate_families

ws_family_known if ws_family in data.ws.admin_families

# second_factor_fresh: the session's second factor was verified recently enough.
second_factor_fresh if {
	ages := input.subject.factor_ages
	count(ages) >= 2
	ages[1] >= 0
	ages[1] <= data.ws.second_factor_max_age_minutes
}

# ws_decision: the socket itself must still be allowed (as its upgrade was: the same
# refusals as HTTP, allowlist included), then the method's class decides.
ws_decision := base if {
	base := proxy_decision with input.action as "http.read"
	not base.allow
} else := {"allow": false, "reason": "owner_only", "status": 403} if {
	ws_class == "owner"
	not is_owner
} else := {"allow": false, "reason": "second_factor_required", "status": 403} if {
	ws_class == "owner"
	not second_factor_fresh
} else := {"allow": false, "reason": "role_forbids", "status": 403} if {
	input.subject.kind == "user"
	not is_owner
	not role_grants_ws(member_role)
} else := {"allow": false, "reason": "tool_denied", "status": 403} if {
	not ws_name_allowed(input.ws.tool)
} else := {"allow": false, "reason": "skill_denied", "status": 403} if {
	not ws_name_allowed(input.ws.skill)
} else := {"allow": true, "reason": ws_class}

role_grants_ws(role) if concat("", ["ws.", ws_class]) in data.roles[role].actions

# ws_name_allowed(name): a tool or skill the message names passes the gateway's skill
# rules; a message that names none passes.
ws_name_allowed(name) if not is_string(name)

ws_name_allowed(name) if name == ""

ws_name_allowed(name) if {
	is_string(name)
	name != ""
	not name in object.get(gateway, ["skills", "deny"], [])
	ws_listed(name)
}

ws_listed(_) if count(object.get(gateway, ["skills", "allow"], [])) == 0

ws_listed(name) if name in gateway.skills.allow
