# Tests of the extension point (extension.rego and decision in authz.rego): package
# moltgate.custom can refuse what the defaults allow and narrow scopes, never allow.
package moltgate.authz_test

import data.moltgate.authz

outside_hours := {{"reason": "outside_hours", "status": 403}}

test_custom_deny_binds_owner_token_socket_and_admin if {
	every req in [
		http(user("u_owner"), "gw1", "http.read"),
		invoke(token("gw1"), "gw1", "web_search"),
		call(user("u_owner"), "gw1", "chat.send"),
		admin(user("u_owner"), "gw1", "admin.gateway.read"),
		admin(admin_token, "gw1", "admin.gateway.read"),
	] {
		decide(req).allow == true
		d := authz.decision with input as req with data.moltgate.custom.deny as outside_hours
		d == {"allow": false, "reason": "outside_hours", "status": 403}
	}
}

# A default refusal keeps its reason and status: a sign-in flow still sees its 401.
test_custom_deny_keeps_default_refusals if {
	d := authz.decision with input as http(anonymous, "gw1", "http.read") with data.moltgate.custom.deny as outside_hours
	d == {"allow": false, "reason": "unauthenticated", "status": 401}
}

# Nothing in moltgate.custom is an allow: a custom decision, allow or empty deny changes
# no default refusal.
test_custom_cannot_allow if {
	req := http(user("u_viewer"), "gw1", "http.write")
	refused(req, 403, "role_forbids")
	d := authz.decision with input as req
		with data.moltgate.custom.deny as set()
		with data.moltgate.custom.allow as true
		with data.moltgate.custom.decision as {"allow": true, "reason": "custom"}
		with data.moltgate.custom.scopes as ["operator.admin"]
	d == {"allow": false, "reason": "role_forbids", "status": 403}
}

test_custom_deny_several_is_deterministic if {
	d := authz.decision with input as http(user("u_owner"), "gw1", "http.read")
		with data.moltgate.custom.deny as {{"reason": "b_rule"}, {"reason": "a_rule", "status": 451}}
	d == {"allow": false, "reason": "a_rule", "status": 451}
}

# A malformed deny still refuses: fail closed.
test_custom_deny_malformed_refuses if {
	req := http(user("u_owner"), "gw1", "http.read")
	every deny in [{"no reason"}, [{"reason": 7, "status": 200}], true, {"x": 1}] {
		d := authz.decision with input as req with data.moltgate.custom.deny as deny
		d.allow == false
		d.status == 403
		d.reason == "custom_denied"
	}
}

test_custom_scopes_narrow if {
	req := http(user("u_operator"), "gw1", "http.read")
	decide(req).scopes == ["operator.read", "operator.write", "operator.questions"]
	d := authz.decision with input as req with data.moltgate.custom.scopes as {"operator.read", "operator.admin"}
	d == {"allow": true, "reason": "member", "scopes": ["operator.read"]}
}

test_custom_empty_changes_nothing if {
	req := http(user("u_operator"), "gw1", "http.read")
	d := authz.decision with input as req with data.moltgate.custom.deny as set()
	d == decide(req)
}
