# moltgate default authorization policy: the entry point and the facts shared by the proxy
# (proxy.rego) and admin API (admin.rego) rules.
#
# The result, data.moltgate.authz.decision, is always exactly one object
# {allow, reason, status?, scopes?}: every rule that produces a decision is a single
# complete rule built as an ordered else-chain, so no data can make two definitions
# disagree (no eval_conflict_error), and anything unmatched falls to the default deny.
#
# Performance: the gateway record is looked up by key (data.gateways[input.gateway.id]);
# nothing here iterates over data.gateways.
package moltgate.authz

default decision := {"allow": false, "reason": "denied", "status": 403}

# decision: the default rules' answer (default_decision), merged with the extension point,
# package moltgate.custom (extension.rego):
#   - a default refusal is the answer, reason and status unchanged;
#   - on what the defaults allow, any element of data.moltgate.custom.deny refuses;
#   - otherwise data.moltgate.custom.scopes, when defined, narrows the allow's scopes.
# Nothing in moltgate.custom is read as an allow: it can only take away.
decision := default_decision if {
	not default_decision.allow
} else := custom_refusal if {
	custom_denied
} else := object.union(default_decision, {"scopes": custom_narrowed}) if {
	cap := data.moltgate.custom.scopes
	is_array(default_decision.scopes)
	custom_narrowed := [s | some s in default_decision.scopes; s in cap]
} else := default_decision

default default_decision := {"allow": false, "reason": "denied", "status": 403}

# A WebSocket message (ws.rego), proxy traffic (proxy.rego: its three common actions over
# HTTP first, then any other) or the admin API (admin.rego); anything else is denied. The
# branches start with an equality on the protocol where they can, which OPA's rule index
# checks before evaluating anything.
default_decision := ws_decision if {
	input.protocol == "ws"
	input.action == "ws.call"
	is_string(input.ws.method)
} else := proxy_decision if {
	input.protocol == "http"
	input.action in {"http.read", "http.write", "tools.invoke"} # the common ones, first
} else := proxy_decision if {
	input.protocol in {"http", "ws"} # over "ws": a socket's upgrade, decided as HTTP
	is_string(input.action)
	input.action != "ws.call" # a message without a method, or over plain HTTP, is no request
	not startswith(input.action, "admin.")
} else := admin_decision if {
	input.protocol == "admin"
	is_string(input.action)
	startswith(input.action, "admin.")
}

# gateway is the record of the gateway the request is for (undefined when unknown).
gateway := data.gateways[input.gateway.id]

gateway_known if is_object(gateway)

# A subject only counts as authenticated when the fields its kind depends on are present:
# an empty user id must never match an owner or member entry.
authenticated if user_id

authenticated if {
	input.subject.kind == "gateway_token"
	is_string(input.subject.gateway)
	input.subject.gateway != ""
}

authenticated if {
	input.subject.kind == "api_token"
	is_string(input.subject.gateway)
	input.subject.gateway != ""
	is_string(input.subject.id)
	input.subject.id != ""
}

authenticated if input.subject.kind == "admin_token"

# user_id is the id of a user subject; undefined for every other kind of subject.
user_id := input.subject.id if {
	input.subject.kind == "user"
	is_string(input.subject.id)
	input.subject.id != ""
}

is_owner if gateway.owner == user_id

# member_role is the role the user holds on the gateway (undefined for non-members).
member_role := gateway.members[user_id]

is_member if is_string(member_role)

# role_allows: the member's role lists the action (data.roles[role].actions).
role_allows if role_grants(member_role)

role_grants(role) if input.action in data.roles[role].actions

platform_admin if user_id in data.platform_admins
