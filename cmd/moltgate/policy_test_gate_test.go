package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue 12: `policy test DIR` passes only a set serve would take: a rule that misspells an
// input field passes its own tests (they do not type input) but is refused by serve's
// gate, so policy test fails, naming the file, line and field.
func TestPolicyTestGate(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("freeze.rego", "package moltgate.custom\n\ndeny contains {\"reason\": \"admin_frozen\"} if startswith(input.request.path, \"/admin\")\n")
	write("freeze_test.rego", "package moltgate.custom_test\n\nimport data.moltgate.custom\n\n"+
		"test_frozen if {\"reason\": \"admin_frozen\"} in custom.deny with input as {\"request\": {\"path\": \"/admin/x\"}}\n")
	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"policy", "test", dir}, noEnv, &out, &errOut); err != nil || !strings.Contains(out.String(), "gate: ok, revision ") {
		t.Fatalf("a set serve takes: got %v\n%s", err, out.String())
	}
	write("typo.rego", "package moltgate.custom\n\ndeny contains {\"reason\": \"x\"} if input.request.paht == \"/a\"\n")
	out.Reset()
	err := run(t.Context(), []string{"policy", "test", dir}, noEnv, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "serve would refuse") || !strings.Contains(err.Error(), "typo.rego:3") ||
		!strings.Contains(err.Error(), "input.request.paht") {
		t.Fatalf("a set with a misspelt input field: got %v\n%s; want serve's refusal naming typo.rego:3 and the field", err, out.String())
	}
	if !strings.Contains(out.String(), "1 passed, 0 failed") {
		t.Errorf("output: %s, want the tests' own result", out.String())
	}
	err = run(t.Context(), []string{"policy", "test", "--min-coverage", "101", dir}, noEnv, &out, &errOut)
	if exitCode(err) != 2 || !strings.Contains(err.Error(), "want a percentage, 0 to 100") {
		t.Errorf("--min-coverage 101: got %v, want a usage error saying the range", err)
	}
}
