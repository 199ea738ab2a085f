package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/policies"
)

// Issue 12: `policy eval` reproduces a decision from a support case: the input, the
// gateways as they were, and OPA's explanation on request; bad input is named, not decided.
func TestPolicyEvalCLI(t *testing.T) {
	write := evalFiles(t)
	member := write("member.json", `{"protocol":"http","action":"http.write","subject":{"kind":"user","id":"u_viewer"},
		"gateway":{"id":"gw1"},"request":{"method":"DELETE","path":"/x","host":"gw1.gw.localhost"},"client_ip":"192.0.2.1"}`)
	data := write("data.json", `{"gateways":[{"id":"gw1","tenant":"t1","owner":"u_owner","auth_mode":"token",
		"members":{"u_viewer":"viewer"},"skills":{}}],"platform_admins":[]}`)
	eval := func(args ...string) (policies.Evaluation, string, error) { return policyEvalRun(t, args...) }

	ev, _, err := eval("--input", member, "--data", data)
	if err != nil || ev.Allow || ev.Reason != "role_forbids" || len(ev.ID) != 32 || ev.Revision == "" || ev.Explanation != nil {
		t.Fatalf("viewer's DELETE with the case's gateways: got %+v, %v; want role_forbids with id and revision", ev, err)
	}
	// Without the case's gateways the same input is about a gateway the policy does not know.
	if ev, _, err = eval("--input", member); err != nil || ev.Reason != "unknown_gateway" {
		t.Fatalf("without --data: got %+v, %v; want unknown_gateway", ev, err)
	}
	ev, out, err := eval("--input", member, "--data", data, "--explain", "full")
	if err != nil || ev.Reason != "role_forbids" || !strings.Contains(out, "Enter data.moltgate.authz.") {
		t.Fatalf("--explain full: got %v, %s", err, out)
	}
	// A set of its own (--dir), whose rule leaves a note: --explain notes shows it.
	setDir := t.TempDir()
	rule := "package moltgate.authz\n\ndecision := {\"allow\": false, \"reason\": \"noted\"} if {\n\ttrace(\"looked at the request\")\n}\n"
	if err := os.WriteFile(filepath.Join(setDir, "noted.rego"), []byte(rule), 0o600); err != nil {
		t.Fatal(err)
	}
	ev, out, err = eval("--input", member, "--dir", setDir, "--explain", "notes")
	if err != nil || ev.Reason != "noted" || !strings.Contains(out, `Note \"looked at the request\"`) || strings.Contains(out, "Eval ") {
		t.Fatalf("--dir with --explain notes: got %v, %s; want the note and its lineage alone", err, out)
	}

	for _, tt := range []struct {
		name string
		args []string
		want string
		code int
	}{
		{"no input", nil, "usage: moltgate policy eval", 2},
		{"missing file", []string{"--input", filepath.Join(filepath.Dir(member), "nope.json")}, "no such file", 1},
		{"malformed input", []string{"--input", write("bad.json", `{"protocol":"http","action":"http.read","subject":{"kind":"user"},"headers":{}}`)}, `unknown field "headers"`, 1},
		{"input missing fields", []string{"--input", write("empty.json", `{}`)}, "action: empty", 1},
		{"malformed data", []string{"--input", write("ok.json", `{"protocol":"http","action":"http.read","subject":{"kind":"anonymous"}}`), "--data", write("baddata.json", `{"gateway":[]}`)}, `unknown field "gateway"`, 1},
		{"bad explain", []string{"--input", filepath.Join(filepath.Dir(member), "ok.json"), "--explain", "verbose"}, "want one of off, notes, fails, full", 1},
	} {
		_, out, err := eval(tt.args...)
		if err == nil || exitCode(err) != tt.code || !strings.Contains(err.Error(), tt.want) || out != "" {
			t.Errorf("%s: got %v (exit %d), output %q; want exit %d naming %q and no decision", tt.name, err, exitCode(err), out, tt.code, tt.want)
		}
	}
}
