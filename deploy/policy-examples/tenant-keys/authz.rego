# The entry point of the example set: the spend-cap refusal first, then allow. A real set
# would chain to its ordinary rules instead of the final allow.
package moltgate.authz

import rego.v1

decision := data.moltgate.spend_cap.deny if {
	data.moltgate.spend_cap.deny
} else := {"allow": true, "reason": "ok"}
