# Tests of admin API rules (admin.rego). Fixtures live in authz_test.rego.
package moltgate.authz_test

import data.moltgate.authz

gateway_admin_actions := [
	"admin.gateway.read",
	"admin.gateway.delete",
	"admin.member.write",
	"admin.allowlist.write",
	"admin.skills.write",
]

test_admin_anonymous_unauthenticated if {
	refused(admin(anonymous, "", "admin.gateway.list"), 401, "unauthenticated")
	refused(admin(anonymous, "gw1", "admin.gateway.read"), 401, "unauthenticated")
}

test_admin_token_every_admin_action if {
	every a in array.concat(gateway_admin_actions, ["admin.gateway.create", "admin.gateway.list"]) {
		d := decide(admin(admin_token, "gw1", a))
		d.allow == true
		d.reason == "admin_token"
	}
}

test_platform_admin_every_admin_action if {
	every a in array.concat(gateway_admin_actions, ["admin.gateway.create", "admin.gateway.list"]) {
		d := decide(admin(user("u_platform"), "gw1", a))
		d.allow == true
		d.reason == "platform_admin"
	}
}

test_platform_admins_come_from_data if {
	d := authz.decision with input as admin(user("u_owner"), "new", "admin.gateway.create")
		with data.platform_admins as ["u_owner"]
	d.allow == true
	refused(admin(user("u_owner"), "new", "admin.gateway.create"), 403, "platform_admin_only")
}

test_create_is_platform_admin_only if {
	refused(admin(user("u_owner"), "new", "admin.gateway.create"), 403, "platform_admin_only")
	refused(admin(user("u_stranger"), "", "admin.gateway.create"), 403, "platform_admin_only")
}

test_list_any_user if {
	d := decide(admin(user("u_stranger"), "", "admin.gateway.list"))
	d.allow == true
	d.reason == "authenticated"
}

test_unknown_gateway_on_gateway_actions if {
	every a in gateway_admin_actions {
		refused(admin(user("u_owner"), "nope", a), 404, "unknown_gateway")
		refused(admin(admin_token, "nope", a), 404, "unknown_gateway")
	}
}

test_owner_every_gateway_admin_action if {
	every a in gateway_admin_actions {
		d := decide(admin(user("u_owner"), "gw1", a))
		d.allow == true
		d.reason == "owner"
	}
}

test_owner_no_admin_on_other_gateway if {
	refused(admin(user("u_owner"), "gw2", "admin.gateway.read"), 403, "not_a_member")
}

test_admin_api_ignores_network_allowlist if {
	allowed(admin(user("u_owner2"), "gw2", "admin.gateway.read"))
}

test_viewer_admin if {
	allowed(admin(user("u_viewer"), "gw1", "admin.gateway.read"))
	every a in ["admin.gateway.delete", "admin.member.write", "admin.allowlist.write", "admin.skills.write"] {
		refused(admin(user("u_viewer"), "gw1", a), 403, "role_forbids")
	}
}

test_operator_admin if {
	allowed(admin(user("u_operator"), "gw1", "admin.gateway.read"))
	every a in ["admin.gateway.delete", "admin.member.write", "admin.allowlist.write", "admin.skills.write"] {
		refused(admin(user("u_operator"), "gw1", a), 403, "role_forbids")
	}
}

test_admin_role_admin if {
	every a in ["admin.gateway.read", "admin.member.write", "admin.allowlist.write", "admin.skills.write"] {
		d := decide(admin(user("u_admin"), "gw1", a))
		d.allow == true
		d.reason == "member"
	}
	refused(admin(user("u_admin"), "gw1", "admin.gateway.delete"), 403, "role_forbids")
}

test_stranger_admin_not_a_member if {
	refused(admin(user("u_stranger"), "gw1", "admin.gateway.read"), 403, "not_a_member")
}

test_gateway_token_no_admin_actions if {
	every a in array.concat(gateway_admin_actions, ["admin.gateway.create", "admin.gateway.list"]) {
		refused(admin(token("gw1"), "gw1", a), 403, "token_forbids")
	}
}
