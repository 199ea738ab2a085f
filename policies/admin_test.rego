# Tests of admin API rules (admin.rego). Fixtures live in authz_test.rego.
package moltgate.authz_test

import data.moltgate.authz

gateway_admin_actions := [
	"admin.gateway.read",
	"admin.gateway.upstream.read",
	"admin.gateway.launch",
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

# Provisioning (issue 14) is the admin token's and platform admins' alone, on any gateway
# id, registered or not (or none: a fleet upgrade); a gateway's owner, a tenant admin or a
# gateway token may not.
test_provision_is_platform_admin_only if {
	every a in ["admin.provision.write", "admin.provision.destroy", "admin.provision.rotate", "admin.provision.upgrade", "admin.provision.read"] {
		decide(admin(admin_token, "new", a)).reason == "admin_token"
		decide(admin(admin_token, "gw1", a)).allow == true
		decide(admin(user("u_platform"), "new", a)).reason == "platform_admin"
		refused(admin(user("u_owner"), "gw1", a), 403, "platform_admin_only")
		refused(admin(user("u_owner"), "new", a), 403, "platform_admin_only")
		refused(admin(anonymous, "new", a), 401, "unauthenticated")
		decide(admin(admin_token, "", a)).allow == true
		refused(admin(user("u_owner"), "", a), 403, "platform_admin_only")
	}
}

# Issue 12: a policy evaluation shows the policies' view of any gateway: the admin token's
# and platform admins' alone, never a gateway's owner, a tenant admin or a gateway token.
test_policy_eval_is_platform_admin_only if {
	decide(admin(admin_token, "", "admin.policy.eval")).reason == "admin_token"
	decide(admin(user("u_platform"), "", "admin.policy.eval")).reason == "platform_admin"
	refused(admin(user("u_owner"), "", "admin.policy.eval"), 403, "platform_admin_only")
	refused(admin(user("u_owner"), "gw1", "admin.policy.eval"), 403, "platform_admin_only")
	refused(admin(anonymous, "", "admin.policy.eval"), 401, "unauthenticated")
	refused(admin({"kind": "gateway_token", "id": "token:gw1", "gateway": "gw1"}, "", "admin.policy.eval"), 403, "token_forbids")
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
	refused(admin(user("u_owner"), "gw2", "admin.gateway.upstream.read"), 403, "not_a_member")
}

test_admin_api_ignores_network_allowlist if {
	allowed(admin(user("u_owner2"), "gw2", "admin.gateway.read"))
}

# Every member may open the gateway's Control UI in a browser (a launch link); a stranger may not.
test_members_launch if {
	every u in ["u_viewer", "u_operator", "u_admin"] {
		allowed(admin(user(u), "gw1", "admin.gateway.launch"))
	}
	refused(admin(user("u_stranger"), "gw1", "admin.gateway.launch"), 403, "not_a_member")
	refused(admin(anonymous, "gw1", "admin.gateway.launch"), 401, "unauthenticated")
}

# Session listing and revoking are every user's (their own: the API filters).
test_sessions_any_user if {
	every a in ["admin.session.read", "admin.session.revoke"] {
		d := decide(admin(user("u_stranger"), "", a))
		d.allow == true
		d.reason == "authenticated"
		refused(admin(anonymous, "", a), 401, "unauthenticated")
	}
}

test_viewer_admin if {
	allowed(admin(user("u_viewer"), "gw1", "admin.gateway.read"))
	every a in ["admin.gateway.upstream.read", "admin.gateway.delete", "admin.member.write", "admin.allowlist.write", "admin.skills.write"] {
		refused(admin(user("u_viewer"), "gw1", a), 403, "role_forbids")
	}
}

test_operator_admin if {
	allowed(admin(user("u_operator"), "gw1", "admin.gateway.read"))
	every a in ["admin.gateway.upstream.read", "admin.gateway.delete", "admin.member.write", "admin.allowlist.write", "admin.skills.write"] {
		refused(admin(user("u_operator"), "gw1", a), 403, "role_forbids")
	}
}

test_admin_role_admin if {
	every a in ["admin.gateway.read", "admin.gateway.upstream.read", "admin.member.write", "admin.allowlist.write", "admin.skills.write"] {
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

# Tenant keys (provider API keys, channel credentials): no gateway, the tenant in
# input.gateway.tenant.
key_actions := [
	"admin.keys.read", "admin.keys.add", "admin.keys.verify",
	"admin.keys.activate", "admin.keys.revoke", "admin.keys.rotate",
]

keys_call(subject, tenant, action) := object.union(admin(subject, "", action), {"gateway": {"id": "", "tenant": tenant}})

org_user(id, org, role) := {"kind": "user", "id": id, "org_id": org, "org_role": role}

test_keys_tenant_admin_of_own_tenant_only if {
	every a in key_actions {
		d := decide(keys_call(org_user("u_a", "tenant-a", "org:admin"), "tenant-a", a))
		d.allow == true
		d.reason == "tenant_admin"
		refused(keys_call(org_user("u_a", "tenant-a", "org:admin"), "tenant-b", a), 403, "tenant_admin_only")
		refused(keys_call(org_user("u_m", "tenant-a", "org:member"), "tenant-a", a), 403, "tenant_admin_only")
		refused(keys_call(user("u_owner"), "tenant-a", a), 403, "tenant_admin_only")
		refused(keys_call(org_user("u_a", "tenant-a", "org:admin"), "", a), 403, "tenant_admin_only")
	}
}

test_keys_admin_token_and_platform_admin if {
	every a in array.concat(key_actions, ["admin.keystore.rotate", "admin.keystore.read"]) {
		decide(keys_call(admin_token, "tenant-a", a)).reason == "admin_token"
		decide(keys_call(user("u_platform"), "tenant-a", a)).reason == "platform_admin"
	}
}

test_keys_refused_to_gateway_tokens_and_anonymous if {
	every a in key_actions {
		refused(keys_call(token("gw1"), "tenant-a", a), 403, "token_forbids")
		refused(keys_call(anonymous, "tenant-a", a), 401, "unauthenticated")
	}
}

test_keystore_rotation_platform_only if {
	every a in ["admin.keystore.rotate", "admin.keystore.read"] {
		refused(keys_call(org_user("u_a", "tenant-a", "org:admin"), "tenant-a", a), 403, "platform_admin_only")
		refused(keys_call(user("u_owner"), "", a), 403, "platform_admin_only")
	}
}

# Audit reads (GET /v1/audit?tenant=…): a tenant's org admins read that tenant's events only;
# every tenant's (no tenant) is for the admin token and platform admins.
test_audit_read_tenant_admin_of_own_tenant_only if {
	d := decide(keys_call(org_user("u_a", "tenant-a", "org:admin"), "tenant-a", "admin.audit.read"))
	d.allow == true
	d.reason == "tenant_admin"
	refused(keys_call(org_user("u_a", "tenant-a", "org:admin"), "tenant-b", "admin.audit.read"), 403, "tenant_admin_only")
	refused(keys_call(org_user("u_a", "tenant-a", "org:admin"), "", "admin.audit.read"), 403, "tenant_admin_only")
	refused(keys_call(org_user("u_m", "tenant-a", "org:member"), "tenant-a", "admin.audit.read"), 403, "tenant_admin_only")
	refused(keys_call(user("u_owner"), "tenant-a", "admin.audit.read"), 403, "tenant_admin_only")
	refused(keys_call(token("gw1"), "tenant-a", "admin.audit.read"), 403, "token_forbids")
	refused(keys_call(anonymous, "tenant-a", "admin.audit.read"), 401, "unauthenticated")
}

test_audit_read_every_tenant_admin_token_and_platform_admin if {
	every tenant in ["", "tenant-a"] {
		decide(keys_call(admin_token, tenant, "admin.audit.read")).reason == "admin_token"
		decide(keys_call(user("u_platform"), tenant, "admin.audit.read")).reason == "platform_admin"
	}
}
