package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The README's metric reference names every metric the code defines, and no other: an
// operator reading it sees what /metrics can show.
func TestREADMEListsEveryMetric(t *testing.T) {
	inCode := codeMetrics(t)
	inREADME := readmeMetrics(t)
	for n := range inCode {
		if _, ok := inREADME[n]; !ok {
			t.Errorf("%s is defined in the code but not in the README", n)
		}
	}
	for n := range inREADME {
		if !inCode[n] {
			t.Errorf("the README lists %s, which the code does not define", n)
		}
	}
}

// codeMetrics returns the moltgate_* metric names the non-test Go sources declare: a
// collector's Name, or a NewDesc. (Other moltgate_ strings, such as the Fly machine metadata
// keys, are not metrics.)
func codeMetrics(t *testing.T) map[string]bool {
	t.Helper()
	quoted := regexp.MustCompile(`(?:Name:\s*|NewDesc\()"(moltgate_[a-z0-9_]+)"`)
	inCode := map[string]bool{}
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != "../.." || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range quoted.FindAllSubmatch(src, -1) {
			inCode[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(inCode) < 20 {
		t.Fatalf("found %d metric names in the code, want the full set", len(inCode))
	}
	return inCode
}

// readmeMetrics returns every metric name the README quotes, with the labels its metric
// tables give it (a table row: | `metric`, `metric` | `label` (values), `label` | ...).
func readmeMetrics(t *testing.T) map[string]map[string]bool {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`^moltgate_[a-z0-9_]+$`)
	quoted := regexp.MustCompile("`([^`]*)`")
	out := map[string]map[string]bool{}
	for _, m := range quoted.FindAllSubmatch(readme, -1) {
		if name.Match(m[1]) && out[string(m[1])] == nil {
			out[string(m[1])] = map[string]bool{}
		}
	}
	for _, line := range strings.Split(string(readme), "\n") {
		cols := strings.Split(line, "|")
		if len(cols) < 4 || !strings.HasPrefix(strings.TrimSpace(cols[1]), "`moltgate_") {
			continue
		}
		for _, m := range quoted.FindAllStringSubmatch(cols[1], -1) {
			for _, l := range quoted.FindAllStringSubmatch(cols[2], -1) {
				if labels := out[m[1]]; labels != nil {
					labels[l[1]] = true
				}
			}
		}
	}
	return out
}
