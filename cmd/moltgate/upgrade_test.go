package main

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// Issue 14: mistakes on the upgrade command line are usage errors (exit 2), found before any
// request is made (the admin URL is a closed port): an image not pinned by digest above all.
func TestUpgradeCommandLine(t *testing.T) {
	env := func(k string) string {
		if k == "MOLTGATE_ADMIN_TOKEN" {
			return strings.Repeat("t", 40)
		}
		return ""
	}
	const (
		closed = "--admin-url=http://127.0.0.1:1"
		pinned = "--image=registry.example.test/gw@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"gateway", "upgrade", "gw1"}, "--image required"},
		{[]string{"gateway", "upgrade", "gw1", "--image=registry.example.test/gw:latest"}, "not pinned by digest"},
		{[]string{"gateway", "upgrade", "gw1", "--image=registry.example.test/gw@sha256:abc"}, "not pinned by digest"},
		{[]string{"gateway", "upgrade", pinned}, "usage: moltgate gateway upgrade ID"},
		{[]string{"gateway", "upgrade", "gw1", "--all", pinned}, "usage: moltgate gateway upgrade ID"},
		{[]string{"gateway", "upgrade", "gw1", "gw2", pinned}, "usage: moltgate gateway upgrade ID"},
		{[]string{"gateway", "upgrade", "--all", "--canary=-1", pinned}, "usage: moltgate gateway upgrade ID"},
		{[]string{"gateway", "upgrade", "--all", "--batch=0", pinned}, "usage: moltgate gateway upgrade ID"},
	} {
		err := run(t.Context(), append(tt.args, closed), env, io.Discard, io.Discard)
		var u usageError
		if !errors.As(err, &u) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: got %v, want a usage error with %q", tt.args, err, tt.want)
		}
	}
	// Well formed, it reaches for the admin API.
	err := run(t.Context(), []string{"gateway", "upgrade", "--all", pinned, closed}, env, io.Discard, io.Discard)
	var u usageError
	if err == nil || errors.As(err, &u) {
		t.Errorf("a well formed fleet upgrade: got %v, want the admin API's error", err)
	}
}
