package main_test

import (
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moltgate/moltgate/proxy/admin"
)

// failpointBinary builds moltgate with the store failpoint (-tags moltgate_failpoints):
// MOLTGATE_FAILPOINT_STORE_STALL=<bucket> stalls every write to that bucket for ever,
// inside its bbolt transaction, as a hung disk would.
func failpointBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "moltgate-failpoints")
	build := exec.Command("go", "build", "-tags", "moltgate_failpoints", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build with failpoints: %v\n%s", err, out)
	}
	return bin
}

// TestStuckStoreIsVisibleAndShutdownBounded is issue 15: a store write that never ends
// (the tenant-keys bucket stalls) is an error to its caller within store.timeout, a reason
// on /readyz and a metric, and SIGTERM still ends the process within shutdown_timeout: once
// with the store's deadline shorter than shutdown_timeout (closing the store gives up), once
// longer (closing the store is still waiting when shutdown_timeout passes).
func TestStuckStoreIsVisibleAndShutdownBounded(t *testing.T) {
	bin := failpointBinary(t)
	cases := []struct {
		name                   string
		storeTimeout, shutdown time.Duration
	}{
		{"store close gives up first", time.Second, 4 * time.Second},
		{"shutdown deadline first", 6 * time.Second, 2 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mg := startBinary(t, bin, []string{"MOLTGATE_FAILPOINT_STORE_STALL=keystore.keys"}, `
listen: @LISTEN@
admin_listen: @ADMIN@
data_dir: @DATA@
admin_token: {file: @ADMINTOKEN@}
store: {timeout: `+c.storeTimeout.String()+`}
shutdown_timeout: `+c.shutdown.String()+`
`)
			added := make(chan error, 1)
			go func() {
				_, err := mg.admin().AddKey(t.Context(), "tenant-a", admin.AddKeyRequest{Provider: "anthropic", Secret: strings.Repeat("k", 40)})
				added <- err
			}()
			if err := <-added; err == nil || !strings.Contains(err.Error(), "503") {
				t.Fatalf("add key on a stuck store: got %v, want a 503", err)
			}
			var ready string
			waitUntil(t, "/readyz to report the stuck store", func() bool {
				var code int
				code, ready = get(t, mg.adminURL+"/readyz")
				return code == http.StatusServiceUnavailable && strings.Contains(ready, "stuck")
			})
			if !strings.Contains(ready, "keystore.keys") {
				t.Fatalf("/readyz: got %q, want it to name the stuck bucket", ready)
			}
			if _, m := get(t, mg.adminURL+"/metrics"); !strings.Contains(m, "moltgate_store_stuck_operations 1") {
				t.Fatalf("metrics: moltgate_store_stuck_operations is not 1:\n%s", grepLines(m, "moltgate_store_"))
			}
			// Reads still answer while a write is stuck.
			if keys, err := mg.admin().ListKeys(t.Context(), "tenant-b"); err != nil || len(keys) != 0 {
				t.Fatalf("another tenant's read during the stall: got %v, %v", keys, err)
			}

			start := time.Now()
			mg.cmd.Process.Signal(syscall.SIGTERM)
			exited := make(chan error, 1)
			go func() { exited <- mg.cmd.Wait() }()
			select {
			case err := <-exited:
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() != 1 {
					t.Fatalf("exit: got %v, want status 1 (shutdown with work unfinished)", err)
				}
				t.Logf("exited %s after SIGTERM (shutdown_timeout %s)", time.Since(start).Round(time.Millisecond), c.shutdown)
			case <-time.After(c.shutdown + 5*time.Second):
				mg.cmd.Process.Signal(syscall.SIGQUIT)
				t.Fatalf("still running %s after SIGTERM, shutdown_timeout %s", time.Since(start).Round(time.Second), c.shutdown)
			}
			log, _ := os.ReadFile(mg.logPath)
			if c.storeTimeout > c.shutdown && !strings.Contains(string(log), "shutdown_timeout passed with work unfinished") {
				t.Fatalf("log does not say the shutdown deadline passed:\n%s", tail(string(log), 20))
			}
		})
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
