package moltgate.authz_test

# Policy revisions (GET /v1/policy, POST /v1/policy/promote|rollback; issue 12): the admin
# token and platform admins only, never a tenant's admins, owners or gateway tokens.
policy_actions := ["admin.policy.read", "admin.policy.promote", "admin.policy.rollback"]

test_policy_revisions_platform_only if {
	every a in policy_actions {
		decide(keys_call(admin_token, "", a)).reason == "admin_token"
		decide(keys_call(user("u_platform"), "", a)).reason == "platform_admin"
		refused(keys_call(org_user("u_a", "tenant-a", "org:admin"), "tenant-a", a), 403, "platform_admin_only")
		refused(keys_call(user("u_owner"), "", a), 403, "platform_admin_only")
		refused(keys_call(token("gw1"), "", a), 403, "token_forbids")
		refused(keys_call(anonymous, "", a), 401, "unauthenticated")
	}
}
