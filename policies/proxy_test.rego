# Tests of proxy traffic rules (proxy.rego). Fixtures live in authz_test.rego.
package moltgate.authz_test

import data.moltgate.authz

full := ["operator.read", "operator.write", "operator.admin"]

# --- who may reach a gateway -------------------------------------------------------------

test_anonymous_unauthenticated if {
	refused(http(anonymous, "gw1", "http.read"), 401, "unauthenticated")
}

test_anonymous_unauthenticated_even_for_unknown_gateway if {
	refused(http(anonymous, "nope", "http.read"), 401, "unauthenticated")
}

test_unknown_gateway if {
	refused(http(user("u_owner"), "nope", "http.read"), 404, "unknown_gateway")
}

test_owner_every_proxy_action if {
	every a in ["http.read", "http.write"] {
		d := decide(http(user("u_owner"), "gw1", a))
		d.allow == true
		d.reason == "owner"
		d.scopes == full
	}
	decide(invoke(user("u_owner"), "gw1", "web_search")).allow == true
	decide(object.union(http(user("u_owner"), "gw1", "chat.send"), {"protocol": "ws"})).allow == true
}

test_owner_of_one_gateway_is_stranger_on_another if {
	refused(from_ip(http(user("u_owner"), "gw2", "http.read"), "10.1.2.3"), 403, "not_a_member")
}

test_viewer if {
	d := decide(http(user("u_viewer"), "gw1", "http.read"))
	d.allow == true
	d.reason == "member"
	d.scopes == ["operator.read"]
	refused(http(user("u_viewer"), "gw1", "http.write"), 403, "role_forbids")
	refused(invoke(user("u_viewer"), "gw1", "web_search"), 403, "role_forbids")
}

# Routes the gateway keeps for operator.admin (another session's media, avatars) or runs as
# its owner (the OpenAI-compatible endpoints): owner, admins and gateway tokens only,
# whatever the method, however the path is spelled or scoped.
get(subject, path, route) := object.union(http(subject, "gw1", "http.read"), {
	"request": {"method": "GET", "path": path, "route": route, "host": "x"},
})

post(subject, path) := object.union(http(subject, "gw1", "http.write"), {
	"request": {"method": "POST", "path": path, "route": path, "host": "x"},
})

test_admin_routes if {
	media := "/api/chat/media/outgoing/s1/a1/full"
	every who in ["u_viewer", "u_operator"] {
		refused(get(user(who), media, media), 403, "role_forbids")
		refused(get(user(who), concat("", ["/__openclaw__/cap/x", media]), media), 403, "role_forbids")
		refused(get(user(who), "/API/Chat/Media/Outgoing/s1/a1", "/API/Chat/Media/Outgoing/s1/a1"), 403, "role_forbids")
		refused(get(user(who), "/__openclaw__/channel-avatar/s1", "/__openclaw__/channel-avatar/s1"), 403, "role_forbids")
		refused(get(user(who), "/__openclaw__/assistant-media", "/__openclaw__/assistant-media"), 403, "role_forbids")
		allowed(get(user(who), "/api/chat/media/other", "/api/chat/media/other"))
	}
	every p in ["/v1/chat/completions", "/v1/responses", "/__openclaw__/assistant-media"] {
		refused(post(user("u_operator"), p), 403, "role_forbids")
		allowed(post(user("u_admin"), p))
		allowed(post(user("u_owner"), p))
		allowed(post(token("gw1"), p))
	}
	allowed(post(user("u_operator"), "/v1/embeddings"))

	# Tools the gateway keeps for its owner, over HTTP.
	refused(invoke(user("u_operator"), "gw1", "sessions"), 403, "role_forbids")
	allowed(invoke(user("u_admin"), "gw1", "sessions"))
	allowed(invoke(user("u_owner"), "gw1", "sessions"))
	allowed(invoke(token("gw1"), "gw1", "sessions"))
	allowed(invoke(user("u_operator"), "gw1", "web_search"))

	# The secrets tool is the secrets.* owner methods in another form.
	refused(invoke(user("u_admin"), "gw1", "secrets"), 403, "owner_only")
	refused(invoke(token("gw1"), "gw1", "secrets"), 403, "owner_only")
	refused(invoke(user("u_owner"), "gw1", "secrets"), 403, "second_factor_required")
	allowed(object.union(invoke(user("u_owner"), "gw1", "secrets"), {"subject": {"factor_ages": [5, 2]}}))
	allowed(get(user("u_admin"), media, media))
	allowed(get(user("u_owner"), media, media))
	allowed(get(token("gw1"), media, media))

	# Without a route (another caller's input), the path is read.
	refused(object.union(http(user("u_viewer"), "gw1", "http.read"), {"request": {"method": "GET", "path": media, "host": "x"}}), 403, "role_forbids")
}

# A route that runs the gateway's owner methods by name (the admin-http-rpc plugin) is held
# as those methods are on a socket.
rpc(subject) := object.union(http(subject, "gw1", "http.write"), {
	"request": {"method": "POST", "path": "/api/v1/admin/rpc", "route": "/api/v1/admin/rpc", "host": "x"},
})

test_owner_routes if {
	refused(rpc(user("u_admin")), 403, "owner_only")
	refused(rpc(user("u_operator")), 403, "owner_only")
	refused(rpc(user("u_viewer")), 403, "role_forbids")
	refused(rpc(token("gw1")), 403, "owner_only")
	refused(rpc(user("u_owner")), 403, "second_factor_required")
	refused(object.union(rpc(user("u_owner")), {"subject": {"factor_ages": [5, 60]}}), 403, "second_factor_required")
	allowed(object.union(rpc(user("u_owner")), {"subject": {"factor_ages": [5, 2]}}))

	# However the path is spelled or scoped.
	scoped := object.union(rpc(user("u_admin")), {"request": {"path": "/__openclaw__/cap/x/API/v1/admin/rpc", "route": "/API/v1/admin/rpc"}})
	refused(scoped, 403, "owner_only")
}

test_operator if {
	allowed(http(user("u_operator"), "gw1", "http.read"))
	allowed(http(user("u_operator"), "gw1", "http.write"))
	d := decide(invoke(user("u_operator"), "gw1", "web_search"))
	d.allow == true
	d.scopes == ["operator.read", "operator.write", "operator.questions"]
}

test_member_admin_role if {
	d := decide(http(user("u_admin"), "gw1", "http.write"))
	d.allow == true
	d.scopes == full
}

test_member_with_unknown_role_forbidden if {
	refused(http(user("u_ghost"), "gw1", "http.read"), 403, "role_forbids")
}

test_roles_come_from_data if {
	d := authz.decision with input as http(user("u_viewer"), "gw1", "http.write")
		with data.roles.viewer as {"actions": ["http.write"], "scopes": ["custom"]}
	d.allow == true
	d.scopes == ["custom"]
}

test_stranger_not_a_member if {
	refused(http(user("u_stranger"), "gw1", "http.read"), 403, "not_a_member")
}

test_platform_admin_gets_no_proxy_traffic if {
	refused(http(user("u_platform"), "gw1", "http.read"), 403, "not_a_member")
}

test_admin_token_gets_no_proxy_traffic if {
	refused(http(admin_token, "gw1", "http.read"), 403, "denied")
}

test_unknown_subject_kind_unauthenticated if {
	refused(http({"kind": "robot", "id": "r"}, "gw1", "http.read"), 401, "unauthenticated")
}

# --- gateway tokens ----------------------------------------------------------------------

test_token_own_gateway if {
	every a in ["http.read", "http.write"] {
		d := decide(http(token("gw1"), "gw1", a))
		d.allow == true
		d.reason == "gateway_token"
		d.scopes == full
	}
	allowed(invoke(token("gw1"), "gw1", "web_search"))
}

test_token_other_gateway if {
	refused(http(token("gw1"), "gw3x", "http.read"), 404, "unknown_gateway")
	refused(from_ip(http(token("gw1"), "gw2", "http.read"), "10.0.0.1"), 403, "wrong_gateway")
}

test_token_other_actions_forbidden if {
	refused(object.union(http(token("gw1"), "gw1", "chat.send"), {"protocol": "ws"}), 403, "token_forbids")
}

# --- network allowlist ---------------------------------------------------------------------

test_allowlist_binds_owner if {
	refused(http(user("u_owner2"), "gw2", "http.read"), 403, "ip_not_allowed")
	allowed(from_ip(http(user("u_owner2"), "gw2", "http.read"), "10.20.30.40"))
}

test_allowlist_binds_token if {
	refused(http(token("gw2"), "gw2", "http.read"), 403, "ip_not_allowed")
	allowed(from_ip(http(token("gw2"), "gw2", "http.read"), "10.0.0.9"))
}

test_allowlist_ipv6 if {
	allowed(from_ip(http(user("u_owner2"), "gw2", "http.read"), "2001:db8::1"))
	refused(from_ip(http(user("u_owner2"), "gw2", "http.read"), "2001:db9::1"), 403, "ip_not_allowed")
}

test_allowlist_unknown_client_ip if {
	refused(from_ip(http(user("u_owner2"), "gw2", "http.read"), ""), 403, "ip_not_allowed")
	refused(from_ip(http(user("u_owner2"), "gw2", "http.read"), "garbage"), 403, "ip_not_allowed")
	refused(object.remove(http(user("u_owner2"), "gw2", "http.read"), ["client_ip"]), 403, "ip_not_allowed")
}

test_allowlist_invalid_cidr_matches_nothing if {
	refused(from_ip(http(token("gw3"), "gw3", "http.read"), "10.0.0.1"), 403, "ip_not_allowed")
}

# The allowlist needs no identity: an anonymous caller from outside it is refused for its
# address, not asked to identify (issue 10: an anonymous WebSocket upgrade is held by moltgate
# until it identifies, so it must be refused here before any socket exists).
test_allowlist_binds_anonymous if {
	refused(http(anonymous, "gw2", "http.read"), 403, "ip_not_allowed")
	refused(from_ip(http(anonymous, "gw2", "http.read"), "203.0.113.9"), 403, "ip_not_allowed")
	refused(from_ip(http(anonymous, "gw2", "http.read"), "10.1.2.3"), 401, "unauthenticated")
	refused(from_ip(http(anonymous, "gw1", "http.read"), "203.0.113.9"), 401, "unauthenticated")
	refused(from_ip(http(anonymous, "gw3", "http.read"), "10.1.2.3"), 403, "ip_not_allowed")
}

test_allowlist_wins_over_stranger_reason if {
	refused(http(user("u_stranger"), "gw2", "http.read"), 403, "ip_not_allowed")
}

test_empty_allowlist_admits_any_address if {
	allowed(from_ip(http(user("u_owner"), "gw1", "http.read"), ""))
}

# --- tools -----------------------------------------------------------------------------

test_tool_missing if {
	refused(invoke(user("u_owner"), "gw1", ""), 403, "tool_missing")
	refused(http(user("u_owner"), "gw1", "tools.invoke"), 403, "tool_missing")
}

test_tool_denied_wins_over_owner if {
	refused(invoke(user("u_owner"), "gw1", "exec"), 403, "tool_denied")
	refused(invoke(token("gw1"), "gw1", "exec"), 403, "tool_denied")
}

test_tool_allow_list if {
	allowed(from_ip(invoke(user("u_owner2"), "gw2", "web_search"), "10.0.0.1"))
	refused(from_ip(invoke(user("u_owner2"), "gw2", "shell"), "10.0.0.1"), 403, "tool_denied")
}

test_tool_deny_wins_over_allow_list if {
	refused(from_ip(invoke(user("u_owner2"), "gw2", "read_file"), "10.0.0.1"), 403, "tool_denied")
}

test_tool_rules_only_for_tools_invoke if {
	allowed(object.union(http(user("u_owner"), "gw1", "http.write"), {"request": {"tool": "exec"}}))
}

# Issue 13: the rules match the lower-cased route (route) against the prefixes as
# written: one with a capital letter would match nothing (the engine refuses such a set).
test_route_prefixes_are_lower_case if {
	every p in array.concat(data.http.admin_prefixes, data.http.owner_prefixes) {
		p == lower(p)
	}
}

# --- API tokens --------------------------------------------------------------------------

# An API token acts as a member holding the token's role, on its own gateway only.
test_api_token_acts_with_its_role if {
	d := decide(http(api_token("gw1", "at_viewer"), "gw1", "http.read"))
	d.allow == true
	d.reason == "api_token"
	d.scopes == ["operator.read"]
	refused(http(api_token("gw1", "at_viewer"), "gw1", "http.write"), 403, "role_forbids")
	refused(invoke(api_token("gw1", "at_viewer"), "gw1", "web_search"), 403, "role_forbids")

	allowed(invoke(api_token("gw1", "at_operator"), "gw1", "web_search"))
	refused(invoke(api_token("gw1", "at_operator"), "gw1", "exec"), 403, "tool_denied")
	refused(invoke(api_token("gw1", "at_operator"), "gw1", "sessions"), 403, "role_forbids")
	allowed(invoke(api_token("gw1", "at_admin"), "gw1", "sessions"))

	refused(http(api_token("gw1", "at_ghost"), "gw1", "http.read"), 403, "role_forbids")
}

# What the gateway keeps for its owner is never a token's, whatever its role.
test_api_token_never_owner if {
	refused(rpc(api_token("gw1", "at_admin")), 403, "owner_only")
	refused(invoke(api_token("gw1", "at_admin"), "gw1", "secrets"), 403, "owner_only")
	refused(invoke(api_token("gw1", "at_admin"), "gw1", "process"), 403, "owner_only")
}

test_api_token_other_gateway if {
	refused(from_ip(http(api_token("gw1", "at_admin"), "gw2", "http.read"), "10.0.0.1"), 403, "wrong_gateway")
	refused(http(api_token("gw1", "at_admin"), "gw3x", "http.read"), 404, "unknown_gateway")

	# A token id of gw1 presented as gw2's finds nothing there.
	refused(from_ip(http(api_token("gw2", "at_admin"), "gw2", "http.read"), "10.0.0.1"), 401, "unknown_token")
}

# Revoked (no longer in the record), or malformed: never an allow.
test_api_token_unknown if {
	refused(http(api_token("gw1", "at_revoked"), "gw1", "http.read"), 401, "unknown_token")
	refused(http({"kind": "api_token", "id": "at_admin", "gateway": ""}, "gw1", "http.read"), 401, "unauthenticated")
	refused(http({"kind": "api_token", "id": "", "gateway": "gw1"}, "gw1", "http.read"), 401, "unknown_token")
	refused(http({"kind": "api_token", "gateway": "gw1"}, "gw1", "http.read"), 401, "unknown_token")
}

test_api_token_bound_by_the_allowlist if {
	refused(from_ip(http(api_token("gw2", "at_admin"), "gw2", "http.read"), "203.0.113.7"), 403, "ip_not_allowed")
}

test_api_token_refused_on_the_admin_api if {
	refused(admin(api_token("gw1", "at_admin"), "gw1", "admin.gateway.read"), 403, "token_forbids")
	refused(admin(api_token("gw1", "at_admin"), "gw1", "admin.member.write"), 403, "token_forbids")
}
