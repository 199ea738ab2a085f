package policies

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue 12: a candidate set goes live only if it compiles, types input against the
// published schema and passes its own tests; otherwise the error says why (naming the failed
// tests) and, on reload, the old set keeps deciding.
func TestGate(t *testing.T) {
	t.Parallel()
	good := map[string]string{
		"custom.rego":      "package moltgate.custom\n\ndeny contains {\"reason\": \"weekend\"} if input.request.country == \"XX\"\n",
		"custom_test.rego": "package moltgate.custom_test\n\nimport data.moltgate.custom\n\ntest_xx if {\"reason\": \"weekend\"} in custom.deny with input as {\"request\": {\"country\": \"XX\"}}\n",
	}
	tests := []struct {
		name  string
		files map[string]string
		want  string
		is    error
	}{
		{"failing test", map[string]string{
			"custom.rego":      good["custom.rego"],
			"custom_test.rego": "package moltgate.custom_test\n\ntest_fails if false\n\ntest_passes if true\n",
		}, "data.moltgate.custom_test.test_fails (custom_test.rego:3)", ErrTestsFailed},
		{"misspelt input field", map[string]string{
			"custom.rego": "package moltgate.custom\n\ndeny contains {\"reason\": \"x\"} if input.request.contry == \"XX\"\n",
		}, "contry", nil},
		{"input field of the wrong type", map[string]string{
			"custom.rego": "package moltgate.custom\n\ndeny contains {\"reason\": \"x\"} if input.subject.factor_ages == \"fresh\"\n",
		}, "custom.rego:3: rego_type_error", nil},
		{"does not compile", map[string]string{"custom.rego": "package moltgate.custom\n\ndeny contains if\n"}, "custom.rego:3", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(t.Context(), Config{Dir: writeSet(t, false, nil, tt.files)}, nil, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) || (tt.is != nil && !errors.Is(err, tt.is)) {
				t.Fatalf("got %v, want an error naming %q", err, tt.want)
			}
		})
	}

	t.Run("reload keeps the old set", func(t *testing.T) {
		t.Parallel()
		dir := writeSet(t, false, nil, good)
		e, err := New(t.Context(), Config{Dir: dir}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		rev := e.Revision()
		if err := os.WriteFile(filepath.Join(dir, "custom_test.rego"), []byte("package moltgate.custom_test\n\ntest_fails if false\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := e.Reload(t.Context()); !errors.Is(err, ErrTestsFailed) {
			t.Fatalf("reload: got %v, want ErrTestsFailed", err)
		}
		if e.Revision() != rev {
			t.Errorf("revision: got %s, want %s (the old set)", e.Revision(), rev)
		}
	})
}
