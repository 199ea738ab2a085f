package policies

import (
	"os"
	"testing"
)

// TestRegoSuite runs the embedded *_test.rego files: a failing Rego test fails go test.
func TestRegoSuite(t *testing.T) {
	t.Parallel()
	results, err := RunTests(t.Context(), Default())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if r.Failed() {
			t.Errorf("%v", r)
			if r.Output != "" {
				t.Logf("output:\n%s", r.Output)
			}
		}
	}
	t.Logf("%d rego tests", len(results))
}

// TestRegoSuiteOnDisk runs the same suite from the package folder, as `opa test policies/`
// would read it, so the folder itself stays a runnable suite.
func TestRegoSuiteOnDisk(t *testing.T) {
	t.Parallel()
	results, err := RunTests(t.Context(), os.DirFS("."))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if r.Failed() {
			t.Errorf("%v", r)
		}
	}
}
