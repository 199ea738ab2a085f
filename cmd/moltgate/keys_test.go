package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKeysCommandLine: mistakes on the keys command line are clear errors, found before any
// request is made (the admin URL is a closed port), and never echo a secret.
func TestKeysCommandLine(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(k string) string {
		if k == "MOLTGATE_ADMIN_TOKEN" {
			return strings.Repeat("t", 40)
		}
		return ""
	}
	const closed = "--admin-url=http://127.0.0.1:1"
	for _, tt := range []struct {
		args  []string
		usage bool
		want  string
	}{
		{[]string{"keys"}, true, "usage: moltgate keys"},
		{[]string{"keys", "list"}, true, "--tenant is required"},
		{[]string{"keys", "show", "--tenant", "org_a"}, true, "wrong number of arguments"},
		{[]string{"keys", "revoke", "--tenant", "org_a", "k_1", "k_2"}, true, "wrong number of arguments"},
		{[]string{"keys", "add", "--tenant", "org_a", "--provider", "openai"}, true, "--secret-file is required"},
		{[]string{"keys", "add", "--tenant", "org_a", "--provider", "openai", "--secret-file", filepath.Join(dir, "nope")}, false, "secret:"},
		{[]string{"keys", "add", "--tenant", "org_a", "--provider", "openai", "--secret-file", empty}, false, "secret: empty"},
		{[]string{"keys", "frobnicate"}, true, `unknown keys verb "frobnicate"`},
		{[]string{"keys", "list", "--tenant", "org_a", "--bogus"}, true, "bogus"},
	} {
		err := run(t.Context(), append(tt.args, closed), env, io.Discard, io.Discard)
		var u usageError
		if err == nil || errors.As(err, &u) != tt.usage || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: got %v, want a %s error with %q", tt.args, err, map[bool]string{true: "usage", false: "plain"}[tt.usage], tt.want)
		}
	}
	var out strings.Builder
	if err := run(t.Context(), []string{"keys", "help"}, env, &out, io.Discard); err != nil || !strings.Contains(out.String(), "rotate-master") {
		t.Fatalf("keys help: %v\n%s", err, out.String())
	}
}
