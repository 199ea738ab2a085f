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
	name := regexp.MustCompile(`moltgate_[a-z0-9_]+`)
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
		for _, m := range regexp.MustCompile(`"(moltgate_[a-z0-9_]+)"`).FindAllSubmatch(src, -1) {
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
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	inREADME := map[string]bool{}
	for _, m := range regexp.MustCompile("`([^`]*)`").FindAllSubmatch(readme, -1) {
		if n := name.Find(m[1]); n != nil && string(n) == string(m[1]) {
			inREADME[string(n)] = true
		}
	}
	for n := range inCode {
		if !inREADME[n] {
			t.Errorf("%s is defined in the code but not in the README", n)
		}
	}
	for n := range inREADME {
		if !inCode[n] {
			t.Errorf("the README lists %s, which the code does not define", n)
		}
	}
}
