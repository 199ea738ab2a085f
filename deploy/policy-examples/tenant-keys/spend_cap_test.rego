package moltgate.spend_cap_test

import rego.v1

keys := {"org_acme": {"openai": {
	"id": "k_0123456789abcdef", "provider": "openai", "kind": "provider_key",
	"scope": ["models/gpt-*"], "monthly_spend_cap_cents": 5000,
}}}

tool := {"protocol": "http", "action": "tools.invoke", "gateway": {"id": "gw1", "tenant": "org_acme"}}

test_capped_key_allows_tools if {
	d := data.moltgate.authz.decision with input as tool with data.tenant_keys as keys
	d.allow
}

test_no_key_refuses_tools if {
	d := data.moltgate.authz.decision with input as tool with data.tenant_keys as {}
	not d.allow
	d.reason == "no_capped_key"
}

test_uncapped_key_refuses_tools if {
	uncapped := json.patch(keys, [{"op": "replace", "path": "/org_acme/openai/monthly_spend_cap_cents", "value": 0}])
	d := data.moltgate.authz.decision with input as tool with data.tenant_keys as uncapped
	d.reason == "no_capped_key"
}

test_other_tenant_key_does_not_count if {
	other := json.patch(tool, [{"op": "replace", "path": "/gateway/tenant", "value": "org_other"}])
	d := data.moltgate.authz.decision with input as other with data.tenant_keys as keys
	d.reason == "no_capped_key"
}

test_reads_are_not_checked if {
	read := json.patch(tool, [{"op": "replace", "path": "/action", "value": "http.read"}])
	d := data.moltgate.authz.decision with input as read with data.tenant_keys as {}
	d.allow
}
