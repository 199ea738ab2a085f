package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/policies"
)

// Issue 12: `policy eval --data` carries data.tenant_keys as a case had them, so a decision
// of a set that reads tenant keys (the spend-cap example) is reproduced; a malformed key
// is named and nothing is decided.
func TestPolicyEvalTenantKeys(t *testing.T) {
	write := evalFiles(t)
	input := write("input.json", `{"protocol":"http","action":"tools.invoke","subject":{"kind":"user","id":"u_owner"},
		"gateway":{"id":"gw1","tenant":"t1"},"request":{"method":"POST","path":"/tools/invoke","host":"gw1.gw.localhost","tool":"web_search"}}`)
	const gateways = `"gateways":[{"id":"gw1","tenant":"t1","owner":"u_owner","auth_mode":"token"}]`
	key := func(kind string, cap int) string {
		return `{` + gateways + `,"tenant_keys":{"t1":{"anthropic":{"id":"k1","provider":"anthropic","kind":"` + kind +
			`","scope":["*"],"monthly_spend_cap_cents":` + strconv.Itoa(cap) + `}}}}`
	}
	set := filepath.Join("..", "..", "deploy", "policy-examples", "tenant-keys")
	eval := func(data string) (policies.Evaluation, error) {
		ev, _, err := policyEvalRun(t, "--input", input, "--dir", set, "--data", data)
		return ev, err
	}
	for _, tt := range []struct {
		name, data, reason string
	}{
		{"capped key", key("provider_key", 5000), "ok"},
		{"uncapped key", key("provider_key", 0), "no_capped_key"},
		{"no tenant keys", `{` + gateways + `}`, "no_capped_key"},
	} {
		ev, err := eval(write(tt.name+".json", tt.data))
		if err != nil || ev.Reason != tt.reason {
			t.Errorf("%s: got %+v, %v; want reason %s", tt.name, ev, err, tt.reason)
		}
	}
	for _, tt := range []struct{ name, data, want string }{
		{"unknown kind", key("password", 5000), `kind: "password"`},
		{"provider filed elsewhere", `{` + gateways + `,"tenant_keys":{"t1":{"openai":{"id":"k1","provider":"anthropic","kind":"provider_key"}}}}`, "filed under t1/openai"},
		{"unknown field", `{"tenant_keys":{"t1":{"anthropic":{"id":"k1","secret":"x"}}}}`, `unknown field "secret"`},
	} {
		if _, err := eval(write(tt.name+".json", tt.data)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error naming %q", tt.name, err, tt.want)
		}
	}
}

// evalFiles returns a function that writes a file in a temporary directory and returns its path.
func evalFiles(t *testing.T) func(name, text string) string {
	dir := t.TempDir()
	return func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
}

// policyEvalRun runs `moltgate policy eval` with args: the decision printed, and the output.
func policyEvalRun(t *testing.T, args ...string) (policies.Evaluation, string, error) {
	var out, errOut bytes.Buffer
	err := run(t.Context(), append([]string{"policy", "eval"}, args...), noEnv, &out, &errOut)
	var ev policies.Evaluation
	if err == nil {
		if jerr := json.Unmarshal(out.Bytes(), &ev); jerr != nil {
			t.Fatalf("output %q: %v", out.String(), jerr)
		}
	}
	return ev, out.String(), err
}
