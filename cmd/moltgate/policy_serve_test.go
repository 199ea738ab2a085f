package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/policies"
)

// Issue 12: a policy.reload event records the candidate set's side of the reload: its
// revision, and the refusal of a candidate directory that no longer passes the gate.
func TestShadowReloadDetails(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("freeze.rego", "package moltgate.custom\n\ndeny contains {\"reason\": \"frozen\"} if input.action == \"http.write\"\n")
	e, err := policies.New(t.Context(), policies.Config{ShadowDir: dir}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	candidate := e.ShadowRevision()
	details := map[string]string{}
	addShadowReload(details, e)
	if details["candidate_revision"] != candidate || details["candidate_error"] != "" {
		t.Fatalf("candidate loaded: got %v, want its revision %s and no error", details, candidate)
	}
	write("typo.rego", "package moltgate.custom\n\ndeny contains {\"reason\": \"x\"} if input.request.paht == \"/a\"\n")
	if err := e.Reload(t.Context()); err != nil {
		t.Fatalf("reload: %v (the live set is the embedded one and loads)", err)
	}
	details = map[string]string{}
	addShadowReload(details, e)
	if details["candidate_revision"] != candidate || !strings.Contains(details["candidate_error"], "typo.rego:3") {
		t.Fatalf("candidate refused: got %v, want the previous revision %s and the refusal naming typo.rego:3", details, candidate)
	}
}
