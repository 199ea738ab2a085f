# Admin API: calls to moltgate's own API that manage gateways (input.protocol == "admin").
package moltgate.authz

# Admin actions that are not about one existing gateway.
unscoped_admin_actions := (((({"admin.gateway.create", "admin.gateway.list"} | session_admin_actions) | tenant_admin_actions) | keystore_admin_actions) | provision_admin_actions) | policy_admin_actions

# Browser session actions: every signed-in user, on their own sessions (the API filters and
# checks each session: admin.member.write on its gateway, or being its user).
session_admin_actions := {"admin.session.read", "admin.session.revoke"}

# Tenant actions: about input.gateway.tenant, with no gateway id; the tenant's organization
# admins, platform admins and the admin token.
tenant_admin_actions := tenant_key_actions | tenant_audit_actions

# Tenant key actions (provider API keys and channel credentials of input.gateway.tenant; no
# gateway id): the tenant's organization admins, platform admins and the admin token.
tenant_key_actions := {
	"admin.keys.read", "admin.keys.add", "admin.keys.verify",
	"admin.keys.activate", "admin.keys.revoke", "admin.keys.rotate",
}

# Tenant audit actions: reading the tenant's audit events (GET /v1/audit?tenant=…). Reading
# every tenant's events (no tenant) is for platform admins and the admin token only.
tenant_audit_actions := {"admin.audit.read"}

# Keystore-wide actions (master key rotation and its status): platform admins and the admin
# token only.
keystore_admin_actions := {"admin.keystore.rotate", "admin.keystore.read"}

# Provisioning actions (a gateway's desired state, /v1/gateways/{id}/provision: create,
# destroy, rotate its token, upgrade its image, read its progress; and fleet upgrades,
# /v1/upgrades): platform admins and the admin token only. The gateway they name may not be
# registered yet, or any more.
provision_admin_actions := {
	"admin.provision.write", "admin.provision.destroy",
	"admin.provision.rotate", "admin.provision.upgrade",
	"admin.provision.read",
}

# Policy actions: a decision with OPA's explanation (POST /v1/policy/eval, which shows the
# policies' view of any gateway) and the revisions (the live policy set and its candidate,
# /v1/policy: read, promote the candidate, roll back): platform admins and the admin token
# only.
policy_admin_actions := {"admin.policy.eval", "admin.policy.read", "admin.policy.promote", "admin.policy.rollback"}

# tenant_admin: a user acting in the tenant's own organization with its admin role.
tenant_admin if {
	user_id
	is_string(input.gateway.tenant)
	input.gateway.tenant != ""
	input.subject.org_id == input.gateway.tenant
	input.subject.org_role == "org:admin"
}

# admin_decision checks in a fixed order; the first rule that applies is the answer.
# admin.gateway.list is allowed to every user: the API filters the list by a per-gateway
# admin.gateway.read decision.
admin_decision := {"allow": false, "reason": "unauthenticated", "status": 401} if {
	not authenticated
} else := {"allow": false, "reason": "unknown_gateway", "status": 404} if {
	not input.action in unscoped_admin_actions
	not gateway_known
} else := {"allow": true, "reason": "admin_token"} if {
	input.subject.kind == "admin_token"
} else := {"allow": true, "reason": "platform_admin"} if {
	platform_admin
} else := {"allow": false, "reason": "token_forbids", "status": 403} if {
	input.subject.kind in {"gateway_token", "api_token"} # tokens are for gateway traffic only
} else := {"allow": false, "reason": "platform_admin_only", "status": 403} if {
	input.action == "admin.gateway.create"
} else := {"allow": false, "reason": "platform_admin_only", "status": 403} if {
	input.action in keystore_admin_actions
} else := {"allow": false, "reason": "platform_admin_only", "status": 403} if {
	input.action in provision_admin_actions
} else := {"allow": false, "reason": "platform_admin_only", "status": 403} if {
	input.action in policy_admin_actions
} else := {"allow": true, "reason": "tenant_admin"} if {
	input.action in tenant_admin_actions
	tenant_admin
} else := {"allow": false, "reason": "tenant_admin_only", "status": 403} if {
	input.action in tenant_admin_actions
} else := {"allow": true, "reason": "authenticated"} if {
	input.action in ({"admin.gateway.list"} | session_admin_actions)
	user_id
} else := {"allow": true, "reason": "owner"} if {
	is_owner
} else := {"allow": false, "reason": "not_a_member", "status": 403} if {
	user_id
	not is_member
} else := {"allow": false, "reason": "role_forbids", "status": 403} if {
	user_id
	not role_allows
} else := {"allow": true, "reason": "member"} if {
	role_allows
}
