# The extension point: how package moltgate.custom is merged into every decision (see
# decision in authz.rego). Security teams write rules in package moltgate.custom, in files
# of their own, without touching the defaults:
#
#   deny   a set of objects {reason, status?}: refuses what the defaults allow (HTTP,
#          WebSocket messages, the admin API; owners and gateway tokens included);
#   scopes a collection of OpenClaw operator scopes: caps the scopes of an allow.
#
# Nothing here is an allow. An absent package costs one lookup of an undefined document.
package moltgate.authz

# custom_denied: the custom package refuses. Any defined deny but an empty collection
# counts, whatever its shape: a malformed deny must never read as "no refusal".
custom_denied if {
	d := data.moltgate.custom.deny
	not empty_collection(d)
}

empty_collection(x) if {
	is_set(x)
	count(x) == 0
}

empty_collection(x) if {
	is_array(x)
	count(x) == 0
}

# custom_refusal: the first custom refusal in sort order, so the answer is deterministic
# when several apply. A refusal without a string reason is "custom_denied"; its status is
# the one given when it is a 4xx or 5xx code, else 403.
custom_refusal := sort(refusals)[0] if {
	refusals := [r |
		some d in custom_deny_elements
		r := {"allow": false, "reason": custom_reason(d), "status": custom_status(d)}
	]
	count(refusals) > 0
} else := {"allow": false, "reason": "custom_denied", "status": 403}

custom_deny_elements := data.moltgate.custom.deny if {
	is_set(data.moltgate.custom.deny)
} else := data.moltgate.custom.deny if {
	is_array(data.moltgate.custom.deny)
} else := []

custom_reason(d) := d.reason if {
	is_string(d.reason)
	d.reason != ""
} else := "custom_denied"

custom_status(d) := d.status if {
	is_number(d.status)
	d.status >= 400
	d.status < 600
} else := 403
