package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// fatalTB records the message of a Fatalf and ends the calling goroutine,
// so failure paths of helpers can be tested.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (f *fatalTB) Fatal(args ...any) {
	f.msg = fmt.Sprint(args...)
	runtime.Goexit()
}

// runFatal runs fn in its own goroutine so that a Goexit ends only fn.
func runFatal(_ *fatalTB, fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
}

func TestRepoRoot(t *testing.T) {
	root := RepoRoot(t)
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("RepoRoot %s: %v", root, err)
	}
	wd, _ := os.Getwd()
	if !strings.HasPrefix(wd, root+string(filepath.Separator)) {
		t.Fatalf("RepoRoot %s: want a parent of %s", root, wd)
	}
}

func TestFreePort(t *testing.T) {
	t.Parallel()
	if p := FreePort(t); p <= 0 || p > 65535 {
		t.Fatalf("FreePort: got %d", p)
	}
}

// TestRedisMissingBinaryFails checks the hint, and that it fails rather than
// skips.
func TestRedisMissingBinaryFails(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	ft := &fatalTB{TB: t}
	runFatal(ft, func() { Redis(ft) })
	if !strings.Contains(ft.msg, "apt-get install redis-server, or run make test") {
		t.Fatalf("Redis without redis-server: got %q, want the install hint", ft.msg)
	}
}

func TestOpenClawMissingInstallFails(t *testing.T) {
	t.Setenv("MOLTGATE_OPENCLAW_DIR", t.TempDir())
	ft := &fatalTB{TB: t}
	runFatal(ft, func() { OpenClaw(ft, OpenClawOptions{}) })
	if !strings.Contains(ft.msg, "run make test") {
		t.Fatalf("OpenClaw without an install: got %q, want the install hint", ft.msg)
	}
}

func TestMergeConfig(t *testing.T) {
	t.Parallel()
	opts := OpenClawOptions{ExtraConfig: map[string]any{
		"gateway": map[string]any{"http": map[string]any{"endpoints": map[string]any{"chatCompletions": map[string]any{"enabled": true}}}},
		"models":  map[string]any{"providers": map[string]any{"stub": map[string]any{"baseUrl": "http://127.0.0.1:1/v1"}}},
	}, Mode: ModeToken, Token: "t"}
	cfg := opts.config(1234, "/x.log")
	got := fmt.Sprint(cfg)
	for _, want := range []string{"port:1234", "token:t", "chatCompletions:map[enabled:true]", "catalogRefresh:map[enabled:false]", "baseUrl:http://127.0.0.1:1/v1", "bind:loopback"} {
		if !strings.Contains(got, want) {
			t.Errorf("config %s: want %s", got, want)
		}
	}
}
