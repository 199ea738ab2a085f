# Admin API: calls to moltgate's own API that manage gateways (input.protocol == "admin").
package moltgate.authz

# Admin actions that are not about one existing gateway.
unscoped_admin_actions := {"admin.gateway.create", "admin.gateway.list"}

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
	input.subject.kind == "gateway_token"
} else := {"allow": false, "reason": "platform_admin_only", "status": 403} if {
	input.action == "admin.gateway.create"
} else := {"allow": true, "reason": "authenticated"} if {
	input.action == "admin.gateway.list"
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
