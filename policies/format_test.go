package policies

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The default set stays `opa fmt` clean (STYLE: Rego), and Format lists and fixes a file
// that is not.
func TestFormat(t *testing.T) {
	t.Parallel()
	if changed, err := Format(".", false); err != nil || len(changed) != 0 {
		t.Fatalf("policies/: got %v, %v; want every file opa fmt clean", changed, err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "custom.rego")
	if err := os.WriteFile(p, []byte("package moltgate.custom\ndeny contains {\"reason\":\"x\"} if {input.action==\"a\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := Format(dir, false); err != nil || !slices.Equal(changed, []string{p}) {
		t.Fatalf("listing: got %v, %v; want [%s]", changed, err, p)
	}
	if _, err := Format(dir, true); err != nil {
		t.Fatal(err)
	}
	if changed, err := Format(dir, false); err != nil || len(changed) != 0 {
		t.Fatalf("after writing: got %v, %v; want none", changed, err)
	}
}
