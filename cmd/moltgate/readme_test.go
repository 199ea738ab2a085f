package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
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

// The README's configuration reference documents every key the configuration file takes,
// and every MOLTGATE_* variable serve reads: an operator should never have to read the Go
// to find a setting.
func TestREADMEDocumentsEveryConfigKey(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := readmeConfigKeys(string(readme))
	// Refused by config validation, so there is nothing to document but the refusal,
	// which the audit table does ("replicas is not used").
	refused := map[string]bool{"audit.redis.sentinel.replicas": true}
	keys := configKeys(reflect.TypeFor[Config](), "")
	if len(keys) < 100 {
		t.Fatalf("found %d configuration keys, want the full set", len(keys))
	}
	for _, k := range keys {
		if !documented[k] && !refused[k] {
			t.Errorf("configuration key %s is not in the README's reference tables", k)
		}
	}
	var vars []string
	new(Config).applyEnv(func(name string) string { vars = append(vars, name); return "" })
	if len(vars) < 10 {
		t.Fatalf("applyEnv asked for %d variables, want every override", len(vars))
	}
	for _, v := range vars {
		if !strings.Contains(string(readme), "`"+v+"`") {
			t.Errorf("serve reads %s, which the README does not name", v)
		}
	}
}

// configKeys returns the dotted key of every leaf the YAML decoder fills in t: a scalar, a
// list, a map or a secret reference.
func configKeys(t reflect.Type, prefix string) []string {
	var out []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft != reflect.TypeFor[SecretRef]() {
			out = append(out, configKeys(ft, prefix+name+".")...)
			continue
		}
		out = append(out, prefix+name)
	}
	return out
}

// readmeConfigKeys returns the keys the README's configuration tables name in their first
// column. A cell may shorten siblings (`store.redis.username` / `.password`), and the rows
// under a heading naming `audit:` are relative to it.
func readmeConfigKeys(readme string) map[string]bool {
	quoted := regexp.MustCompile("`([^`]+)`")
	keys := map[string]bool{}
	section := ""
	for _, line := range strings.Split(readme, "\n") {
		if strings.HasPrefix(line, "#") {
			section = ""
			if strings.Contains(line, "(`audit:`)") {
				section = "audit."
			}
			continue
		}
		cells := strings.Split(line, "|")
		if !strings.HasPrefix(line, "| `") || len(cells) < 3 {
			continue
		}
		parent := ""
		for _, m := range quoted.FindAllStringSubmatch(cells[1], -1) {
			k := m[1]
			if strings.HasPrefix(k, ".") {
				k = parent + k
			} else {
				k = section + k
				if i := strings.LastIndex(k, "."); i >= 0 {
					parent = k[:i]
				}
			}
			keys[k] = true
		}
	}
	return keys
}
