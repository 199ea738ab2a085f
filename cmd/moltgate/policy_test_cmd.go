package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/moltgate/moltgate/policies"
)

// policyTest runs the Rego tests of DIR (the embedded set without it) with coverage, then
// passes DIR through the gate serve applies (compile, input schema, data, tests) and
// replays the decisions recorded in DIR/testdata/replay. It fails on a failed test, on
// coverage under --min-coverage, on a set serve would refuse, and on a recorded outcome
// that changed unless listed in DIR/testdata/replay/expected_changes.txt.
func policyTest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "usage: moltgate policy test [--min-coverage N] [DIR]"
	fs := newFlags("policy test", usage, stderr)
	minCoverage := fs.Float64("min-coverage", 0, "fail when the tests cover less than N percent of the set's rule lines")
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return usageError{usage}
	}
	if *minCoverage < 0 || *minCoverage > 100 {
		return usageError{fmt.Sprintf("policy test: --min-coverage %g: want a percentage, 0 to 100\n%s", *minCoverage, usage)}
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
	// The tests alone do not type input against the schema: a set whose tests pass can still
	// be one serve refuses. Passing here means serve takes it.
	e, err := policies.New(ctx, policies.Config{Dir: dir}, nil, nil)
	if err != nil {
		return fmt.Errorf("policy test: serve would refuse %s: %w", dir, err)
	}
	fmt.Fprintf(stdout, "gate: ok, revision %s (what serve loads, shadows and promotes)\n", e.Revision())
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
