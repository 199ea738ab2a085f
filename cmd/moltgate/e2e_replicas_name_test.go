package main_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moltgate/moltgate/internal/testenv"
)

// TestReplicaNameTakenIsRefused (issue 11): two replicas under one audit.replica would
// interleave one audit chain, so a second `moltgate serve` with the name of a running one is
// refused at start, saying why; once the first stops (SIGTERM: it gives its name up) the
// name starts again at once, without waiting for its lease to lapse.
func TestReplicaNameTakenIsRefused(t *testing.T) {
	rdb := testenv.Redis(t)
	config, _ := replicaConfig(t, rdb.Addr, replicaOptions{})
	env := []string{"MOLTGATE_AUDIT_REPLICA=rep-same"}
	first := startBinary(t, binary, env, config)

	dir := t.TempDir()
	tokFile := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tokFile, []byte(strings.Repeat("ad", 20)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	second := strings.NewReplacer("@LISTEN@", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		"@ADMIN@", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), "@DATA@", filepath.Join(dir, "data"),
		"@ADMINTOKEN@", tokFile).Replace(config)
	path := filepath.Join(dir, "moltgate.yaml")
	if err := os.WriteFile(path, []byte(second), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "serve", "--config", path)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if want := `audit.replica "rep-same": a running replica has this name already`; err == nil || !strings.Contains(string(out), want) {
		t.Fatalf("a second replica named rep-same: %v, want it refused with %q:\n%s", err, want, tail(string(out), 20))
	}

	first.cmd.Process.Signal(syscall.SIGTERM)
	if err := first.cmd.Wait(); err != nil {
		t.Fatalf("first replica's stop: %v", err)
	}
	startBinary(t, binary, env, config) // fails the test unless it comes up ready
}
