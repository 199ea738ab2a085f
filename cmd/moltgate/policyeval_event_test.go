package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/audit"
)

// Issue 12: a line of `moltgate audit query` is given to policy eval as it is: a shadow
// difference's and a sampled decision's input is decided; a refusal, which records only part
// of its input, is refused with where the whole input is, and nothing is decided.
func TestPolicyEvalAuditEvent(t *testing.T) {
	write := evalFiles(t)
	const input = `{"protocol":"http","action":"http.write","subject":{"kind":"user","id":"u_viewer"},` +
		`"gateway":{"id":"gw1"},"request":{"method":"DELETE","path":"/x","host":"gw1.gw.localhost"}}`
	data := write("data.json", `{"gateways":[{"id":"gw1","tenant":"t1","owner":"u_owner","auth_mode":"token","members":{"u_viewer":"viewer"}}]}`)
	event := func(ev audit.Event) string {
		ev.Schema = 2
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		return write(ev.Type+".json", string(b))
	}
	shadow := event(audit.Event{Type: audit.TypePolicyShadow, Outcome: audit.OutcomeAllow, Details: map[string]string{"input": input}})
	sampled := event(audit.Event{Type: audit.TypePolicyDecision, Outcome: audit.OutcomeAllow, Decision: &audit.Decision{Input: json.RawMessage(input)}})
	for _, file := range []string{shadow, sampled} {
		ev, _, err := policyEvalRun(t, "--input", file, "--data", data)
		if err != nil || ev.Reason != "role_forbids" {
			t.Errorf("%s: got %+v, %v; want the input decided: role_forbids", file, ev, err)
		}
	}
	deny := event(audit.Event{Type: audit.TypePolicyDeny, Outcome: audit.OutcomeDeny,
		Decision: &audit.Decision{Input: json.RawMessage(`{"subject":{"kind":"anonymous"},"action":"http.read","method":"GET"}`)}})
	if _, out, err := policyEvalRun(t, "--input", deny); err == nil || out != "" || !strings.Contains(err.Error(), "policy.deny audit event") ||
		!strings.Contains(err.Error(), "policy.shadow_difference") {
		t.Errorf("a refusal's event: got %v, output %q; want an error saying which events hold a whole input", err, out)
	}
}
