# Tests of the entry point (authz.rego) and the fixtures shared by every *_test.rego file.
package moltgate.authz_test

import data.moltgate.authz

# --- fixtures ----------------------------------------------------------------------------

# data.gateways and data.platform_admins come from fixtures_test.json: real data, not
# `with` overrides, so the tests see data exactly as the engine's store serves it.

user(id) := {"kind": "user", "id": id}

token(gw) := {"kind": "gateway_token", "id": "tok", "gateway": gw}

# api_token(gw, id) is the holder of API token id of gateway gw (fixtures: gw1's at_viewer,
# at_operator, at_admin and at_ghost, whose role is not defined).
api_token(gw, id) := {"kind": "api_token", "id": id, "gateway": gw}

anonymous := {"kind": "anonymous", "id": ""}

admin_token := {"kind": "admin_token", "id": "ops"}

http(subject, gw, action) := {
	"subject": subject,
	"gateway": {"id": gw},
	"request": {"method": "GET", "path": "/", "host": sprintf("%s.example.test", [gw])},
	"client_ip": "203.0.113.7",
	"protocol": "http",
	"action": action,
}

invoke(subject, gw, tool) := object.union(http(subject, gw, "tools.invoke"), {
	"request": {"method": "POST", "path": "/tools/invoke", "host": "x", "tool": tool},
})

from_ip(req, ip) := object.union(req, {"client_ip": ip})

admin(subject, gw, action) := {
	"subject": subject,
	"gateway": {"id": gw},
	"request": {"method": "POST", "path": "/admin", "host": "admin"},
	"client_ip": "127.0.0.1",
	"protocol": "admin",
	"action": action,
}

# decide evaluates the decision for req against the fixtures.
decide(req) := d if {
	d := authz.decision with input as req
}

allowed(req) if decide(req).allow == true

refused(req, status, reason) if {
	d := decide(req)
	d.allow == false
	d.status == status
	d.reason == reason
}

# --- entry point -------------------------------------------------------------------------

test_default_deny_unknown_protocol if {
	refused(object.union(http(user("u_owner"), "gw1", "http.read"), {"protocol": "smtp"}), 403, "denied")
}

test_default_deny_empty_input if {
	d := authz.decision with input as {}
	d == {"allow": false, "reason": "denied", "status": 403}
}

test_admin_action_on_proxy_protocol_denied if {
	refused(http(user("u_owner"), "gw1", "admin.gateway.delete"), 403, "denied")
}

test_proxy_action_on_admin_protocol_denied if {
	refused(admin(admin_token, "gw1", "http.write"), 403, "denied")
}

test_ws_call_without_ws_document_denied if {
	refused(object.union(http(user("u_owner"), "gw1", "ws.call"), {"protocol": "ws"}), 403, "denied")
}

test_ws_call_over_http_denied if {
	refused(http(user("u_owner"), "gw1", "ws.call"), 403, "denied")
}

test_non_string_action_denied if {
	refused(object.union(http(user("u_owner"), "gw1", "http.read"), {"action": 7}), 403, "denied")
}

test_decision_is_single_object_for_every_subject if {
	subjects := [user("u_owner"), user("u_viewer"), user("u_platform"), user("x"), token("gw1"), token("gw2"), api_token("gw1", "at_admin"), anonymous, admin_token]
	actions := ["http.read", "http.write", "tools.invoke", "admin.gateway.create", "admin.gateway.read", "admin.member.write"]
	every s in subjects {
		every a in actions {
			every p in ["http", "ws", "admin"] {
				d := decide(object.union(http(s, "gw1", a), {"protocol": p}))
				is_boolean(d.allow)
				is_string(d.reason)
			}
		}
	}
}

test_empty_user_id_is_unauthenticated if {
	refused(http(user(""), "gw3", "http.read"), 401, "unauthenticated")
}

test_token_without_gateway_is_unauthenticated if {
	refused(http({"kind": "gateway_token", "id": "tok"}, "gw1", "http.read"), 401, "unauthenticated")
}
