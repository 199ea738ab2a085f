# Tests of the seed's controls (issue 12): host-command tools (proxy.rego, ws.rego) and
# configuration writes that open a messaging channel (ws.rego channel_opening). Payloads
# are the pinned OpenClaw gateway's: tools.invoke {name}, POST /tools/invoke {tool}, and
# config.set/patch/apply {raw} whose channels section the relay hands over as input.ws.channels.
package moltgate.authz_test

import data.moltgate.authz

open_skills := {"allow": [], "deny": []}

exec_allowed_skills := {"allow": ["exec", "process", "web_search"], "deny": []}

decide_with_skills(req, skills) := d if {
	d := authz.decision with input as req with data.gateways.gw1.skills as skills
}

test_host_commands_are_the_owners_with_a_second_factor if {
	every tool in ["exec", "process"] {
		every req in [invoke(user("u_owner"), "gw1", tool), call_tool(user("u_owner"), "gw1", "tools.invoke", tool)] {
			decide_with_skills(req, open_skills) == {"allow": false, "reason": "second_factor_required", "status": 403}
			decide_with_skills(with_fva(req, fresh), open_skills).allow == true
		}
		every req in [
			invoke(user("u_operator"), "gw1", tool), invoke(user("u_admin"), "gw1", tool), invoke(token("gw1"), "gw1", tool),
			call_tool(user("u_admin"), "gw1", "tools.invoke", tool), call_tool(token("gw1"), "gw1", "tools.invoke", tool),
			with_fva(call_tool(user("u_admin"), "gw1", "tools.invoke", tool), fresh),
		] {
			decide_with_skills(req, open_skills) == {"allow": false, "reason": "owner_only", "status": 403}
		}
	}
}

# Issue 13: a record without an allow list lists nothing: host commands stay the owner's.
# (`not x in undefined` is undefined, not true: host_command reads the list with object.get.)
test_host_commands_bind_a_record_without_an_allow_list if {
	gw9 := {"id": "gw9", "owner": "u_owner", "members": {"u_operator": "operator"}, "allowlist": [], "skills": {"deny": []}}
	every req in [invoke(user("u_operator"), "gw9", "exec"), invoke(token("gw9"), "gw9", "process")] {
		d := authz.decision with input as req with data.gateways.gw9 as gw9
		d == {"allow": false, "reason": "owner_only", "status": 403}
	}
}

# The gateway's skill rules can hand them to the roles that invoke tools, explicitly.
test_host_commands_listed_in_skills_allow_follow_roles if {
	decide_with_skills(invoke(user("u_operator"), "gw1", "exec"), exec_allowed_skills).allow == true
	decide_with_skills(call_tool(user("u_admin"), "gw1", "tools.invoke", "process"), exec_allowed_skills).allow == true
	decide_with_skills(invoke(token("gw1"), "gw1", "exec"), exec_allowed_skills).allow == true
	decide_with_skills(call_tool(user("u_viewer"), "gw1", "tools.invoke", "exec"), exec_allowed_skills).reason == "role_forbids"
}

test_other_tools_unchanged if {
	decide_with_skills(invoke(user("u_operator"), "gw1", "web_search"), open_skills).allow == true
}

config_write(subject, method, channels) := object.union(call(subject, "gw1", method), {"ws": {"method": method, "channels": channels}})

opening_writes := [
	{"whatsapp": {"dmPolicy": "open", "allowFrom": ["*"]}},
	{"whatsapp": {"allowFrom": ["+15555550123"]}},
	{"telegram": {"enabled": true, "botToken": "x"}},
	{"telegram": {"groupPolicy": "open"}},
	{"telegram": {"groups": {"-100123": {"allowFrom": ["42"]}}}},
	{"telegram": {"direct": {"42": {"dmPolicy": "open"}}}},
	{"telegram": {"accounts": {"alerts": {"botToken": "x"}}}},
	{"discord": {"guilds": {"123456789": {"users": ["987"]}}}},
	{"discord": {"guilds": {"123456789": {}}}},
	{"discord": {"guilds": {"1": {"channels": {"2": {"roles": ["3"]}}}}}},
	{"discord": {"dm": {"policy": "open"}}},
	{"slack": {"channels": {"C1": {"users": ["U1"]}}}},
	{"signal": {"groupAllowFrom": ["+1"]}},
	{"imessage": {"allowFrom": ["a@b.c"]}},
]

tightening_writes := [
	{"whatsapp": {"dmPolicy": "pairing"}},
	{"whatsapp": {"dmPolicy": "disabled", "allowFrom": []}},
	{"telegram": {"enabled": false}},
	{"telegram": {"groupPolicy": "allowlist", "groupAllowFrom": []}},
	{"discord": {"guilds": {"123456789": {"enabled": false}}}},
	{"slack": {"allowFrom": null}},
]

test_channel_opening_needs_owner_and_second_factor if {
	every channels in opening_writes {
		refused(config_write(user("u_admin"), "config.patch", channels), 403, "owner_only")
		refused(config_write(user("u_owner"), "config.patch", channels), 403, "second_factor_required")
		decide(with_fva(config_write(user("u_owner"), "config.patch", channels), fresh)).allow == true
	}
}

test_channel_opening_by_every_write_method_and_subject if {
	channels := {"whatsapp": {"dmPolicy": "open", "allowFrom": ["*"]}}
	every method in ["config.set", "config.patch", "config.apply"] {
		refused(config_write(user("u_admin"), method, channels), 403, "owner_only")
		refused(with_fva(config_write(user("u_admin"), method, channels), fresh), 403, "owner_only")
		refused(config_write(token("gw1"), method, channels), 403, "owner_only")
		refused(config_write(user("u_owner"), method, channels), 403, "second_factor_required")
		decide(with_fva(config_write(user("u_owner"), method, channels), fresh)).allow == true
	}
}

test_channel_tightening_stays_admin if {
	every channels in tightening_writes {
		decide(config_write(user("u_admin"), "config.patch", channels)).allow == true
		decide(config_write(token("gw1"), "config.patch", channels)).allow == true
		decide(config_write(user("u_owner"), "config.patch", channels)).allow == true
		refused(config_write(user("u_operator"), "config.patch", channels), 403, "role_forbids")
	}
}

test_unreadable_config_counts_as_opening if {
	req := object.union(call(user("u_admin"), "gw1", "config.patch"), {"ws": {"method": "config.patch", "config_unreadable": true}})
	refused(req, 403, "owner_only")
}

# A write without a channels section is an ordinary admin method.
test_config_write_without_channels if {
	decide(call(user("u_admin"), "gw1", "config.patch")).allow == true
}
