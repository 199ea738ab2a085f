package policies

import (
	"cmp"
	"context"
	"io/fs"
	"maps"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/cover"
)

// FileCoverage is the test coverage of one policy file: the lines of its rules that the
// tests evaluated, of all its rule lines (OPA's cover package counts them).
type FileCoverage struct {
	File       string  `json:"file"`
	Covered    int     `json:"covered_lines"`
	NotCovered int     `json:"not_covered_lines"`
	Percent    float64 `json:"coverage"`
}

// Coverage is the test coverage of a policy set's rules, its tests left out.
type Coverage struct {
	Files   []FileCoverage `json:"files"` // by file name
	Percent float64        `json:"coverage"`
}

// RunTestsCoverage is RunTests with coverage: which lines of the set's rules (not of its
// *_test.rego files) the tests evaluated, per file and in total.
func RunTestsCoverage(ctx context.Context, fsys fs.FS) ([]TestResult, Coverage, error) {
	cov := cover.New()
	results, modules, err := runTests(ctx, fsys, cov)
	if err != nil {
		return results, Coverage{}, err
	}
	report := cov.Report(ownModules(modules))
	var out Coverage
	covered, total := 0, 0
	for _, name := range slices.Sorted(maps.Keys(report.Files)) {
		if strings.HasSuffix(name, "_test.rego") {
			continue
		}
		f := report.Files[name]
		out.Files = append(out.Files, FileCoverage{File: name, Covered: f.CoveredLines, NotCovered: f.NotCoveredLines,
			Percent: percent(f.CoveredLines, f.CoveredLines+f.NotCoveredLines)})
		covered, total = covered+f.CoveredLines, total+f.CoveredLines+f.NotCoveredLines
	}
	slices.SortFunc(out.Files, func(a, b FileCoverage) int { return cmp.Compare(a.File, b.File) })
	out.Percent = percent(covered, total)
	return results, out, nil
}

// ownModules are the modules whose coverage a set's author reads: an extension's own (the
// defaults are tested by their own tests, which an extension's run leaves out), keyed by the
// file name evaluation records (loadSet renames extension modules apart from the defaults').
func ownModules(modules map[string]*ast.Module) map[string]*ast.Module {
	own := map[string]*ast.Module{}
	for name, m := range modules {
		if strings.HasPrefix(name, extensionPrefix) {
			own[m.Package.Location.File] = m
		}
	}
	if len(own) == 0 {
		return modules
	}
	return own
}

// percent is part of whole in percent; a file without rule lines is wholly covered.
func percent(part, whole int) float64 {
	if whole == 0 {
		return 100
	}
	return 100 * float64(part) / float64(whole)
}
