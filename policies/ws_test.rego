# Tests of WebSocket message rules (ws.rego). Fixtures live in authz_test.rego and
# fixtures_test.json; the method classes come from ws.json, as the engine loads them.
package moltgate.authz_test

import data.moltgate.authz

# call is one client→gateway request frame on gateway gw, as the relay decides it.
call(subject, gw, method) := {
	"subject": subject,
	"gateway": {"id": gw},
	"request": {"method": "GET", "path": "/", "host": sprintf("%s.example.test", [gw])},
	"client_ip": "203.0.113.7",
	"protocol": "ws",
	"action": "ws.call",
	"ws": {"method": method},
}

call_tool(subject, gw, method, tool) := object.union(call(subject, gw, method), {"ws": {"method": method, "tool": tool}})

call_skill(subject, gw, method, skill) := object.union(call(subject, gw, method), {"ws": {"method": method, "skill": skill}})

# with_fva gives the subject Clerk's fva claim: minutes since first and second factor.
with_fva(req, ages) := object.union(req, {"subject": object.union(req.subject, {"factor_ages": ages})})

ws_allowed(req, class) if {
	d := decide(req)
	d.allow == true
	d.reason == class
}

read_methods := ["sessions.list", "chat.history", "status", "health", "agents.list", "skills.list", "cron.list", "sessions.files.get", "plugins.get", "node.list", "worktrees.list"]

operate_methods := ["chat.send", "chat.abort", "chat.toolTitles", "sessions.create", "sessions.patch", "question.resolve", "tools.invoke", "tools.catalog"]

admin_methods := ["config.set", "config.apply", "config.get", "skills.install", "plugins.enable", "agents.create", "cron.add", "update.run", "models.list", "logs.tail", "sessions.reset", "sessions.delete", "conversations.list", "plugins.credentials.inspect"]

owner_methods := ["terminal.open", "terminal.input", "exec.approval.resolve", "exec.approvals.set", "device.pair.approve", "device.token.rotate", "node.pair.approve", "secrets.reveal", "sessions.catalog.startTerminal", "environments.session.exec", "plugins.install"]

fresh := [3, 2]

# --- method classes ------------------------------------------------------------------------

test_ws_classes if {
	every m in read_methods {
		authz.ws_class == "read" with input as call(user("u_owner"), "gw1", m)
	}
	every m in operate_methods {
		authz.ws_class == "operate" with input as call(user("u_owner"), "gw1", m)
	}
	every m in admin_methods {
		authz.ws_class == "admin" with input as call(user("u_owner"), "gw1", m)
	}
	every m in owner_methods {
		authz.ws_class == "owner" with input as call(user("u_owner"), "gw1", m)
	}
}

# A family the policy does not know is closed until someone classifies it.
test_ws_unknown_family_is_admin if {
	every m in ["frobnicate.run", "frobnicate", "quantum.entangle", "", ".", "vault.list", "vault.get", "frobnicate.history"] {
		authz.ws_class == "admin" with input as call(user("u_owner"), "gw1", m)
	}
	every u in ["u_viewer", "u_operator"] {
		refused(call(user(u), "gw1", "frobnicate.run"), 403, "role_forbids")
		refused(call(user(u), "gw1", "vault.list"), 403, "role_forbids")
	}
	ws_allowed(call(user("u_admin"), "gw1", "frobnicate.run"), "admin")
	ws_allowed(call(user("u_owner"), "gw1", "frobnicate.run"), "admin")
}

# A method refused for the member's role names the operator scope its class needs, so the
# relay can answer as the gateway does ("missing scope") and the Control UI shows it as such.
test_ws_role_refusal_names_the_missing_scope if {
	decide(call(user("u_viewer"), "gw1", "config.patch")).missing_scope == "operator.admin"
	decide(call(user("u_viewer"), "gw1", "chat.send")).missing_scope == "operator.write"
	decide(call(user("u_operator"), "gw1", "config.get")).missing_scope == "operator.admin"
	not decide(call(user("u_stranger"), "gw1", "chat.send")).missing_scope
	not decide(call(user("u_operator"), "gw1", "terminal.open")).missing_scope
}

# A sensitive family stays admin even for a verb that reads elsewhere: config.get returns
# secrets, logs.tail what the agents did.
test_ws_sensitive_family_read_verb_is_admin if {
	every m in ["config.get", "config.schema", "logs.list", "models.list", "channels.status", "users.list"] {
		refused(call(user("u_viewer"), "gw1", m), 403, "role_forbids")
		refused(call(user("u_operator"), "gw1", m), 403, "role_forbids")
		ws_allowed(call(user("u_admin"), "gw1", m), "admin")
	}
}

# --- each role -----------------------------------------------------------------------------

test_ws_viewer_reads_only if {
	every m in read_methods {
		ws_allowed(call(user("u_viewer"), "gw1", m), "read")
	}
	every m in array.concat(operate_methods, admin_methods) {
		refused(call(user("u_viewer"), "gw1", m), 403, "role_forbids")
	}
}

test_ws_operator_reads_and_operates if {
	every m in read_methods {
		ws_allowed(call(user("u_operator"), "gw1", m), "read")
	}
	every m in operate_methods {
		ws_allowed(call(user("u_operator"), "gw1", m), "operate")
	}
	every m in admin_methods {
		refused(call(user("u_operator"), "gw1", m), 403, "role_forbids")
	}
}

test_ws_admin_everything_but_owner if {
	every m in array.concat(read_methods, array.concat(operate_methods, admin_methods)) {
		decide(call(user("u_admin"), "gw1", m)).allow == true
	}
	every m in owner_methods {
		refused(with_fva(call(user("u_admin"), "gw1", m), fresh), 403, "owner_only")
	}
}

test_ws_owner_everything_but_owner_methods_without_second_factor if {
	every m in array.concat(read_methods, array.concat(operate_methods, admin_methods)) {
		decide(call(user("u_owner"), "gw1", m)).allow == true
	}
}

test_ws_unknown_role_gets_nothing if {
	every m in ["status", "sessions.list", "chat.send", "config.set"] {
		refused(call(user("u_ghost"), "gw1", m), 403, "role_forbids")
	}
}

# Issue 13: the socket's own rules refuse a role data.roles does not define, rather than
# leave it to the HTTP rules: `not x in data.roles[role].actions` is undefined, not true,
# for such a role, so they must read object.get(data.roles, [role, "actions"], []).
test_ws_unknown_role_refused_by_the_socket_rules if {
	every m in ["status", "sessions.list", "chat.send", "config.set"] {
		d := authz.ws_user_decision(data.gateways.gw1) with input as call(user("u_ghost"), "gw1", m)
		d == {"allow": false, "reason": "role_forbids", "status": 403}
	}
}

# --- who may hold the socket at all --------------------------------------------------------

test_ws_socket_refusals_come_first if {
	refused(call(anonymous, "gw1", "status"), 401, "unauthenticated")
	refused(call(user("u_stranger"), "gw1", "status"), 403, "not_a_member")
	refused(call(user("u_owner"), "nope", "status"), 404, "unknown_gateway")
	refused(call(user("u_platform"), "gw1", "status"), 403, "not_a_member")
	refused(call(token("gw1"), "gw2", "status"), 403, "ip_not_allowed")
	refused(from_ip(call(token("gw1"), "gw2", "status"), "10.0.0.1"), 403, "wrong_gateway")
	refused(with_fva(call(user("u_owner2"), "gw2", "terminal.open"), fresh), 403, "ip_not_allowed")
}

test_ws_allowlist_then_class if {
	ws_allowed(from_ip(call(user("u_viewer"), "gw2", "config.set"), "10.1.1.1"), "admin")
	refused(call(user("u_viewer"), "gw2", "status"), 403, "ip_not_allowed")
}

test_ws_gateway_token_all_but_owner if {
	every m in array.concat(read_methods, array.concat(operate_methods, admin_methods)) {
		decide(call(token("gw1"), "gw1", m)).allow == true
	}
	every m in owner_methods {
		refused(call(token("gw1"), "gw1", m), 403, "owner_only")
	}
}

# --- owner-only methods and the second factor ----------------------------------------------

test_ws_owner_methods_with_fresh_second_factor if {
	every m in owner_methods {
		ws_allowed(with_fva(call(user("u_owner"), "gw1", m), fresh), "owner")
	}

	# exactly at the limit (data.ws.second_factor_max_age_minutes) is still fresh
	ws_allowed(with_fva(call(user("u_owner"), "gw1", "terminal.open"), [60, data.ws.second_factor_max_age_minutes]), "owner")
	ws_allowed(with_fva(call(user("u_owner"), "gw1", "terminal.open"), [0, 0]), "owner")
}

test_ws_owner_methods_stale_second_factor if {
	limit := data.ws.second_factor_max_age_minutes
	every m in owner_methods {
		refused(with_fva(call(user("u_owner"), "gw1", m), [1, limit + 1]), 403, "second_factor_required")
	}
	refused(with_fva(call(user("u_owner"), "gw1", "terminal.open"), [1, 100000]), 403, "second_factor_required")
}

test_ws_owner_methods_missing_second_factor if {
	every m in owner_methods {
		refused(call(user("u_owner"), "gw1", m), 403, "second_factor_required")
	}

	# never verified (-1), only a first factor, malformed claims
	every ages in [[0, -1], [-1, -1], [5], [], ["1", "2"], [1, null], [1, "3"]] {
		refused(with_fva(call(user("u_owner"), "gw1", "exec.approval.resolve"), ages), 403, "second_factor_required")
	}
}

test_ws_second_factor_limit_is_policy_data if {
	req := with_fva(call(user("u_owner"), "gw1", "terminal.open"), [1, 30])
	refused(req, 403, "second_factor_required")
	d := authz.decision with input as req with data.ws.second_factor_max_age_minutes as 60
	d.allow == true
}

# A second factor does not make a member the owner.
test_ws_fresh_second_factor_is_not_ownership if {
	every u in ["u_viewer", "u_operator", "u_admin"] {
		refused(with_fva(call(user(u), "gw1", "device.pair.approve"), fresh), 403, "owner_only")
	}
}

# --- tools and skills named in a message ---------------------------------------------------

test_ws_tool_denied_by_gateway_skills if {
	refused(call_tool(user("u_owner"), "gw1", "tools.invoke", "exec"), 403, "tool_denied")
	refused(call_tool(user("u_operator"), "gw1", "tools.invoke", "exec"), 403, "tool_denied")
	refused(call_tool(token("gw1"), "gw1", "tools.invoke", "exec"), 403, "tool_denied")
	ws_allowed(call_tool(user("u_operator"), "gw1", "tools.invoke", "web_search"), "operate")
}

test_ws_tool_allowlist_and_deny_wins if {
	ok := from_ip(call_tool(user("u_viewer"), "gw2", "tools.invoke", "web_search"), "10.0.0.1")
	ws_allowed(ok, "operate")
	refused(from_ip(call_tool(user("u_viewer"), "gw2", "tools.invoke", "shell"), "10.0.0.1"), 403, "tool_denied")
	refused(from_ip(call_tool(user("u_viewer"), "gw2", "tools.invoke", "read_file"), "10.0.0.1"), 403, "tool_denied")
}

test_ws_skill_named if {
	refused(call_skill(user("u_admin"), "gw1", "skills.install", "exec"), 403, "skill_denied")
	ws_allowed(call_skill(user("u_admin"), "gw1", "skills.install", "weather"), "admin")
	refused(from_ip(call_skill(user("u_viewer"), "gw2", "skills.install", "weather"), "10.0.0.1"), 403, "skill_denied")
	ws_allowed(from_ip(call_skill(user("u_viewer"), "gw2", "skills.install", "web_search"), "10.0.0.1"), "admin")
}

# The role is checked before the tool: a viewer learns nothing about the gateway's skills.
test_ws_role_before_tool if {
	refused(call_tool(user("u_viewer"), "gw1", "tools.invoke", "exec"), 403, "role_forbids")
}

test_ws_empty_tool_name_passes_rules if {
	ws_allowed(call_tool(user("u_operator"), "gw1", "tools.catalog", ""), "operate")
}

# --- the entry point routes ws.call only with a method -------------------------------------

# (The owner's proxy rules allow any action, so these use subjects that own nothing.)
test_ws_call_without_method_denied if {
	every s in [user("u_admin"), token("gw1")] {
		decide(object.remove(call(s, "gw1", "status"), ["ws"])).allow == false
		decide(object.union(call(s, "gw1", "status"), {"ws": {"method": 7}})).allow == false
	}
}

test_ws_call_on_http_protocol_is_not_a_ws_decision if {
	every s in [user("u_admin"), token("gw1")] {
		decide(object.union(call(s, "gw1", "status"), {"protocol": "http"})).allow == false
	}
}

# The secrets tool is the secrets.* owner methods in another form.
test_ws_owner_tools if {
	secrets := object.union(call(user("u_admin"), "gw1", "tools.invoke"), {"ws": {"tool": "secrets"}})
	refused(with_fva(secrets, fresh), 403, "owner_only")
	refused(object.union(secrets, {"subject": user("u_owner")}), 403, "second_factor_required")
	allowed(with_fva(object.union(secrets, {"subject": user("u_owner")}), fresh))
	allowed(object.union(call(user("u_operator"), "gw1", "tools.invoke"), {"ws": {"tool": "web_search"}}))
	refused(with_fva(object.union(call(user("u_admin"), "gw1", "tools.invoke"), {"ws": {"tool": "terminal"}}), fresh), 403, "owner_only")
}

# A member's allow rests on the role listing "ws.<class>", not only on the refusals before
# it: a class the data gives in a shape the refusal cannot read (a number instead of a name)
# must refuse, never allow.
test_ws_member_allow_rests_on_the_role if {
	d := decide(call(user("u_operator"), "gw1", "status")) with data.ws.methods.status as 7
	d.allow == false
}

# --- API tokens --------------------------------------------------------------------------

test_ws_api_token_as_its_role if {
	ws_allowed(call(api_token("gw1", "at_viewer"), "gw1", "sessions.list"), "read")
	refused(call(api_token("gw1", "at_viewer"), "gw1", "chat.send"), 403, "role_forbids")
	ws_allowed(call(api_token("gw1", "at_operator"), "gw1", "chat.send"), "operate")
	refused(call(api_token("gw1", "at_operator"), "gw1", "config.get"), 403, "role_forbids")
	ws_allowed(call(api_token("gw1", "at_admin"), "gw1", "config.get"), "admin")
	refused(call_tool(api_token("gw1", "at_operator"), "gw1", "tools.invoke", "exec"), 403, "tool_denied")
	refused(call(api_token("gw1", "at_ghost"), "gw1", "sessions.list"), 403, "role_forbids")
}

test_ws_api_token_never_owner if {
	every m in owner_methods {
		refused(with_fva(call(api_token("gw1", "at_admin"), "gw1", m), fresh), 403, "owner_only")
	}
}

test_ws_api_token_revoked_or_foreign if {
	refused(call(api_token("gw1", "at_revoked"), "gw1", "sessions.list"), 401, "unknown_token")
	refused(from_ip(call(api_token("gw1", "at_admin"), "gw2", "sessions.list"), "10.0.0.1"), 403, "wrong_gateway")
}
