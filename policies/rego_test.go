package policies

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
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

// `opa test policies/` loads every .rego file below this directory, testdata included
// (moltgate's own loader skips testdata): only the policy set itself may live here, or the
// command the README gives policy authors breaks on conflicting rules.
func TestOnlyThePolicySetIsBelowPolicies(t *testing.T) {
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".rego") && filepath.Dir(p) != "." {
			t.Errorf("%s: a .rego file below policies/ is loaded by `opa test policies/` with the set; keep examples elsewhere (deploy/policy-examples)", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestAsOpaTestLoadsIt runs the directory the way `opa test policies/` does: OPA's own file
// loader over everything below it (no moltgate filter), then OPA's test runner.
func TestAsOpaTestLoadsIt(t *testing.T) {
	res, err := loader.NewFileLoader().WithRegoVersion(ast.RegoV1).All([]string{"."})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := tester.NewRunner().SetStore(inmem.NewFromObject(res.Documents)).SetModules(res.ParsedModules()).
		SetDefaultRegoVersion(ast.RegoV1).RunTests(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for r := range ch {
		n++
		if r.Fail || r.Error != nil {
			t.Errorf("%s.%s: fail=%v error=%v", r.Package, r.Name, r.Fail, r.Error)
		}
	}
	if n < 50 {
		t.Fatalf("%d tests ran, want the whole suite", n)
	}
}
