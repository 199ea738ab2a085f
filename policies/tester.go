package policies

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// ErrNoTests is returned by RunTests for a policy set without test_ rules.
var ErrNoTests = errors.New("no test rules found")

// TestResult is the outcome of one Rego test rule.
type TestResult struct {
	Package  string        `json:"package"`  // e.g. "data.moltgate.authz_test"
	Name     string        `json:"name"`     // e.g. "test_owner_every_proxy_action"
	Location string        `json:"location"` // file:row
	Pass     bool          `json:"pass"`
	Skip     bool          `json:"skip,omitempty"` // a todo_test_ rule
	Error    string        `json:"error,omitempty"`
	Duration time.Duration `json:"duration"`
	Output   string        `json:"output,omitempty"` // what the test print()ed
}

// Failed reports whether the test failed or erred (a skipped test did neither).
func (r TestResult) Failed() bool { return !r.Pass && !r.Skip }

func (r TestResult) String() string {
	switch {
	case r.Pass:
		return fmt.Sprintf("%s: %s.%s: PASS (%v)", r.Location, r.Package, r.Name, r.Duration)
	case r.Skip:
		return fmt.Sprintf("%s: %s.%s: SKIPPED", r.Location, r.Package, r.Name)
	case r.Error != "":
		return fmt.Sprintf("%s: %s.%s: ERROR: %s", r.Location, r.Package, r.Name, r.Error)
	}
	return fmt.Sprintf("%s: %s.%s: FAIL (%v)", r.Location, r.Package, r.Name, r.Duration)
}

// RunTests runs the test_ rules of the policy set in fsys (every *.rego file, tests
// included, and its data files, laid out as `opa test DIR` reads them) with OPA's tester,
// and returns one result per test, sorted by location. The error reports a set that does
// not load or compile, or that has no tests; failing tests are results, not errors. Use
// Default() for the embedded set and os.DirFS(dir) for a directory.
func RunTests(ctx context.Context, fsys fs.FS) ([]TestResult, error) {
	results, _, err := runTests(ctx, fsys, nil)
	return results, err
}

// runTests is RunTests, tracing every evaluation into cov when it is not nil; it also
// returns the modules tested.
func runTests(ctx context.Context, fsys fs.FS, cov *cover.Cover) ([]TestResult, map[string]*ast.Module, error) {
	res, err := loadSet(fsys, true)
	if err != nil {
		return nil, nil, fmt.Errorf("policies: test: load: %w", err)
	}
	store := inmem.NewFromObject(res.Documents)
	runner := tester.NewRunner().
		SetStore(store).
		SetModules(res.ParsedModules()).
		SetDefaultRegoVersion(ast.RegoV1).
		CapturePrintOutput(true)
	if cov != nil {
		runner = runner.SetCoverageQueryTracer(cov)
	}
	ch, err := runner.RunTests(ctx, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("policies: test: compile: %w", err)
	}
	var out []TestResult
	for r := range ch { // drain fully: the runner's goroutines end when the channel is read out
		tr := TestResult{
			Package:  r.Package,
			Name:     r.Name,
			Pass:     r.Pass(),
			Skip:     r.Skip,
			Duration: r.Duration,
			Output:   string(r.Output),
		}
		if r.Location != nil {
			tr.Location = fmt.Sprintf("%s:%d", r.Location.File, r.Location.Row)
		}
		if r.Error != nil {
			tr.Error = r.Error.Error()
		}
		out = append(out, tr)
	}
	if err := ctx.Err(); err != nil {
		return out, nil, fmt.Errorf("policies: test: %w", err)
	}
	if len(out) == 0 {
		return nil, nil, fmt.Errorf("policies: test: %w", ErrNoTests)
	}
	slices.SortFunc(out, func(a, b TestResult) int {
		return cmp.Or(cmp.Compare(a.Location, b.Location), cmp.Compare(a.Name, b.Name))
	})
	return out, res.ParsedModules(), nil
}
