package policies

import (
	"os"
	"strings"
	"testing"
)

// Issue 12: policy test reports coverage per file of the set's rules, its tests left out.
// An extension whose tests do not reach one of its rules shows that file under 100 %.
func TestCoverage(t *testing.T) {
	_, def, err := RunTestsCoverage(t.Context(), Default())
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]FileCoverage{}
	for _, f := range def.Files {
		if strings.HasSuffix(f.File, "_test.rego") {
			t.Errorf("coverage lists test file %s", f.File)
		}
		names[f.File] = f
	}
	if f, ok := names["authz.rego"]; !ok || f.Covered == 0 || f.Percent <= 0 || f.Percent > 100 {
		t.Errorf("authz.rego coverage: %+v, want some of it covered", f)
	}
	if def.Percent <= 0 || def.Percent > 100 {
		t.Errorf("total coverage %v, want in (0, 100]", def.Percent)
	}

	dir := writeSet(t, false, nil, map[string]string{
		"custom.rego": "package moltgate.custom\n\ndeny contains {\"reason\": \"a\"} if {\n\tinput.action == \"a\"\n}\n\n" +
			"deny contains {\"reason\": \"b\"} if {\n\tinput.action == \"b\"\n}\n",
		"custom_test.rego": "package moltgate.custom_test\n\ntest_a if {\n\tdata.moltgate.custom.deny with input as {\"action\": \"a\"}\n}\n",
	})
	_, ext, err := RunTestsCoverage(t.Context(), os.DirFS(dir))
	if err != nil {
		t.Fatal(err)
	}
	if len(ext.Files) != 1 || ext.Files[0].File != "custom.rego" {
		t.Fatalf("extension coverage files: %+v, want custom.rego alone (the defaults are not its to test)", ext.Files)
	}
	if c := ext.Files[0]; c.NotCovered == 0 || c.Covered == 0 || c.Percent >= 100 || ext.Percent != c.Percent {
		t.Fatalf("custom.rego coverage: %+v (total %v), want the rule for b not covered and the one for a covered", c, ext.Percent)
	}
}
