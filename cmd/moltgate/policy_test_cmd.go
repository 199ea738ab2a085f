package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/moltgate/moltgate/policies"
)

// policyTest runs the Rego tests of DIR (the embedded set without it) with coverage, then
// replays the decisions recorded in DIR/testdata/replay. It fails on a failed test, on
// coverage under --min-coverage, and on a recorded outcome that changed unless listed in
// DIR/testdata/replay/expected_changes.txt.
func policyTest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "usage: moltgate policy test [--min-coverage N] [DIR]"
	fs := newFlags("policy test", usage, stderr)
	minCoverage := fs.Float64("min-coverage", 0, "fail when the tests cover less than N percent of the set's rule lines")
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() > 1 || *minCoverage < 0 || *minCoverage > 100 {
		return usageError{usage}
	}
	fsys, dir := policies.Default(), fs.Arg(0)
	if dir != "" {
		fsys = os.DirFS(dir)
	}
	results, cov, err := policies.RunTestsCoverage(ctx, fsys)
	if err != nil {
		return err
	}
	failed := 0
	for _, r := range results {
		if r.Failed() {
			failed++
			fmt.Fprintln(stdout, "FAIL", r.String())
		}
	}
	fmt.Fprintf(stdout, "%d passed, %d failed\n", len(results)-failed, failed)
	for _, f := range cov.Files {
		fmt.Fprintf(stdout, "coverage %5.1f%%  %s (%d of %d lines)\n", f.Percent, f.File, f.Covered, f.Covered+f.NotCovered)
	}
	fmt.Fprintf(stdout, "coverage %5.1f%%  total\n", cov.Percent)
	if failed > 0 {
		return fmt.Errorf("policy test: %d failed", failed)
	}
	if cov.Percent < *minCoverage {
		return fmt.Errorf("policy test: coverage %.1f%% under --min-coverage %g", cov.Percent, *minCoverage)
	}
	if dir == "" {
		return nil
	}
	rep, err := policies.Replay(ctx, dir)
	unchanged, expected := 0, 0
	for _, r := range rep.Results {
		switch {
		case !r.Changed:
			unchanged++
		case r.Expected:
			expected++
			fmt.Fprintf(stdout, "replay: %s (%s) changed, as listed in expected_changes.txt\n", r.Name, r.At)
		}
	}
	if len(rep.Results) > 0 {
		fmt.Fprintf(stdout, "replay: %d recorded decisions, %d unchanged, %d changed as expected\n",
			len(rep.Results), unchanged, expected)
	}
	return err
}
