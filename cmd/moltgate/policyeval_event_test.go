package main

import (
	"encoding/json"
	"slices"
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
		ev, out, err := policyEvalRun(t, "--input", file, "--data", data)
		if err != nil || ev.Reason != "role_forbids" || strings.Contains(out, "input_erased") {
			t.Errorf("%s: got %s, %v; want the input decided: role_forbids, and no erased fields", file, out, err)
		}
	}
	// An input that lost fields to masking is decided as it is, and the output says which.
	erasedShadow := event(audit.Event{Type: audit.TypePolicyShadow, Outcome: audit.OutcomeAllow,
		Details: map[string]string{"input": input, "erased": "/input/request/tool,/input/ws/channels"}})
	erasedSampled := event(audit.Event{Type: audit.TypePolicyDecision, Outcome: audit.OutcomeAllow,
		Decision: &audit.Decision{Input: json.RawMessage(input), Erased: []string{"/input/request/tool", "/input/ws/channels"}}})
	for _, file := range []string{erasedShadow, erasedSampled} {
		ev, out, err := policyEvalRun(t, "--input", file, "--data", data)
		var got struct {
			InputErased []string `json:"input_erased"`
		}
		if err == nil {
			err = json.Unmarshal([]byte(out), &got)
		}
		if err != nil || ev.Reason != "role_forbids" || !slices.Equal(got.InputErased, []string{"/input/request/tool", "/input/ws/channels"}) {
			t.Errorf("%s: got %+v, input_erased %v, %v; want role_forbids and the two erased fields", file, ev, got.InputErased, err)
		}
	}
	deny := event(audit.Event{Type: audit.TypePolicyDeny, Outcome: audit.OutcomeDeny,
		Decision: &audit.Decision{Input: json.RawMessage(`{"subject":{"kind":"anonymous"},"action":"http.read","method":"GET"}`)}})
	if _, out, err := policyEvalRun(t, "--input", deny); err == nil || out != "" || !strings.Contains(err.Error(), "policy.deny audit event") ||
		!strings.Contains(err.Error(), "policy.shadow_difference") {
		t.Errorf("a refusal's event: got %v, output %q; want an error saying which events hold a whole input", err, out)
	}
}
