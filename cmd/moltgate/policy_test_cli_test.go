package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue 12: `policy test DIR` prints coverage per file and fails under --min-coverage, and
// replays DIR/testdata/replay: a changed outcome fails, named, unless listed.
func TestPolicyTestCoverageAndReplay(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"custom.rego": "package moltgate.custom\n\ndeny contains {\"reason\": \"a\"} if {\n\tinput.action == \"admin.keystore.read\"\n}\n\n" +
			"deny contains {\"reason\": \"b\"} if {\n\tinput.action == \"b\"\n}\n",
		"custom_test.rego": "package moltgate.custom_test\n\ntest_a if {\n\tdata.moltgate.custom.deny with input as {\"action\": \"admin.keystore.read\"}\n}\n",
		// Recorded before custom.rego: the admin token read the keystore; now that is refused.
		"testdata/replay/recorded.json": `[
			{"decision_id": "r1", "input": {"subject": {"kind": "admin_token", "id": ""}, "protocol": "admin", "action": "admin.gateway.list"}, "result": {"allow": true, "reason": "admin_token"}},
			{"decision_id": "r2", "input": {"subject": {"kind": "admin_token", "id": ""}, "protocol": "admin", "action": "admin.keystore.read"}, "result": {"allow": true, "reason": "admin_token"}}
		]`,
	}
	for name, body := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o700)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var out, errOut bytes.Buffer
	err := run(t.Context(), []string{"policy", "test", dir}, noEnv, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "r2 (recorded.json:2): recorded allow admin_token, now deny a 403") || strings.Contains(err.Error(), "r1") {
		t.Fatalf("policy test with r2 changed: got %v, want r2 named, and r1 not\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "1 passed, 0 failed") || !strings.Contains(out.String(), "custom.rego (") {
		t.Errorf("policy test output: %s, want the test result and custom.rego's coverage", out.String())
	}
	os.WriteFile(filepath.Join(dir, "testdata", "replay", "expected_changes.txt"), []byte("r2 # retired by custom.rego\n"), 0o600)
	out.Reset()
	if err := run(t.Context(), []string{"policy", "test", dir}, noEnv, &out, &errOut); err != nil ||
		!strings.Contains(out.String(), "replay: 2 recorded decisions, 1 unchanged, 1 changed as expected") {
		t.Fatalf("policy test with r2 listed: %v\n%s", err, out.String())
	}
	if err := run(t.Context(), []string{"policy", "test", "--min-coverage", "90", dir}, noEnv, &out, &errOut); err == nil ||
		!strings.Contains(err.Error(), "under --min-coverage 90") {
		t.Errorf("policy test --min-coverage 90 with one of two rules tested: got %v, want a failure", err)
	}
	if err := run(t.Context(), []string{"policy", "test", "--min-coverage", "10", dir}, noEnv, &out, &errOut); err != nil {
		t.Errorf("policy test --min-coverage 10: %v", err)
	}
	if err := run(t.Context(), []string{"policy", "test", "--min-coverage", "101", dir}, noEnv, &out, &errOut); exitCode(err) != 2 {
		t.Errorf("policy test --min-coverage 101: got %v, want a usage error", err)
	}
}
