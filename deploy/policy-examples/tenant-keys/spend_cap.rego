# An example of a policy reading data.tenant_keys (see ../../README.md, "Data"): tool calls
# are refused unless the gateway's tenant has an active provider key with a monthly spend
# cap. Every other decision is the default policy's.
#
# The directory is a complete policy set (authz.rego here replaces the default entry point);
# engine tests load it with Config.Dir, and `opa test` runs spend_cap_test.rego against it.
package moltgate.spend_cap

import rego.v1

# The tenant's active keys, by provider; empty when it has none.
tenant_keys := object.get(data.tenant_keys, input.gateway.tenant, {})

# capped holds when some active key of the tenant carries a spend cap.
capped if {
	some k in tenant_keys
	k.monthly_spend_cap_cents > 0
}

# deny is the refusal of a tool call without a capped key, or undefined.
deny := {"allow": false, "reason": "no_capped_key", "status": 403} if {
	input.action == "tools.invoke"
	not capped
}
