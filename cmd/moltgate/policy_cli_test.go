package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue 12: `policy check DIR` loads a set as serve would and names what is wrong; `policy
// fmt` lists, then rewrites, what opa fmt would change.
func TestPolicyCheckAndFmt(t *testing.T) {
	good, bad := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(good, "custom.rego"), []byte("package moltgate.custom\ndeny contains {\"reason\":\"x\"} if {input.action==\"a\"}\n"), 0o600)
	os.WriteFile(filepath.Join(bad, "custom.rego"), []byte("package moltgate.custom\n\ndeny contains {\"reason\": \"x\"} if input.request.toool == \"a\"\n"), 0o600)
	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"policy", "check", good}, noEnv, &out, &errOut); err != nil || !strings.HasPrefix(out.String(), "ok: revision ") {
		t.Fatalf("check good: %v %q", err, out.String())
	}
	if err := run(t.Context(), []string{"policy", "check", bad}, noEnv, &out, &errOut); err == nil || !strings.Contains(err.Error(), "input.request.toool") {
		t.Fatalf("check bad: got %v, want the undefined input field named", err)
	}
	out.Reset()
	if err := run(t.Context(), []string{"policy", "fmt", good}, noEnv, &out, &errOut); err == nil || !strings.Contains(out.String(), "custom.rego") {
		t.Fatalf("fmt list: got %v %q, want custom.rego listed and an error", err, out.String())
	}
	if err := run(t.Context(), []string{"policy", "fmt", "-w", good}, noEnv, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run(t.Context(), []string{"policy", "fmt", good}, noEnv, &out, &errOut); err != nil || out.Len() != 0 {
		t.Fatalf("fmt after -w: got %v %q, want nothing listed", err, out.String())
	}
	if err := run(t.Context(), []string{"policy", "fmt"}, noEnv, &out, &errOut); exitCode(err) != 2 {
		t.Fatalf("fmt without DIR: got %v, want a usage error", err)
	}
}
