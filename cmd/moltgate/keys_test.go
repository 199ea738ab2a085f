package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/proxy/admin"
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

// TestPrintRotation: `keys rotation` prints a line per job (the master key's and each
// tenant's, issue 15), and a tenant's rotation, which comes without counts, no counts line.
func TestPrintRotation(t *testing.T) {
	master := keystore.Job{Kind: "master", Master: 3, Phase: "done", Resealed: 70, Retired: []uint32{2}}
	tenant := keystore.Job{Kind: "tenant", Tenant: "org_a", Master: 3, Salt: 2, Phase: "reencrypt", Resealed: 5}
	counted := keystore.Usage{Master: map[uint32]int{3: 70}, Total: 70}
	tests := []struct {
		name   string
		rot    admin.Rotation
		counts bool
		want   string
	}{
		{"one job, as rotate-master prints it", admin.Rotation{Job: &master, Usage: counted}, true,
			"rotation: master to master key version 3, done, 70 records re-encrypted, retired master versions [2]\n" +
				"records: 70; per master version: v3=70\n"},
		{"every job", admin.Rotation{Job: &tenant, Jobs: []keystore.Job{master, tenant}, Usage: counted}, true,
			"rotation: master to master key version 3, done, 70 records re-encrypted, retired master versions [2]\n" +
				"rotation: tenant to tenant org_a salt version 2, reencrypt, 5 records re-encrypted\n" +
				"records: 70; per master version: v3=70\n"},
		{"a tenant's, without counts", admin.Rotation{Job: &tenant}, false,
			"rotation: tenant to tenant org_a salt version 2, reencrypt, 5 records re-encrypted\n"},
		{"none", admin.Rotation{}, false, "rotation: none yet\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			if err := printRotation(&out, tt.rot, tt.counts); err != nil {
				t.Fatal(err)
			}
			if out.String() != tt.want {
				t.Fatalf("got\n%s\nwant\n%s", out.String(), tt.want)
			}
		})
	}
}
