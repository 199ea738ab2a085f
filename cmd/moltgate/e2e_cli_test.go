package main_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/internal/testenv"
)

// cliRun runs the moltgate binary with args (the admin URL and token of in, unless args
// name their own) and returns its combined output and exit status.
func (in *instance) cliRun(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "MOLTGATE_ADMIN_TOKEN="+in.adminToken, "MOLTGATE_ADMIN_URL="+in.adminURL)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("moltgate %s: %v", strings.Join(args, " "), err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

// Issue 16: each mistake a newcomer made on the command line is explained, once, with the
// exit status of its kind: 2 for a mistake in the command line itself, 1 for a refusal.
func TestCLIMessages(t *testing.T) {
	mg := startMoltgate(t, `
listen: @LISTEN@
admin_listen: @ADMIN@
data_dir: @DATA@
admin_token: {file: @ADMINTOKEN@}
`)
	mg.cli(t, "gateway", "add", "--id", "demo", "--tenant", "acme", "--owner", "user_alice", "--upstream", "http://127.0.0.1:18789")
	secretFile := filepath.Join(t.TempDir(), "key")
	os.WriteFile(secretFile, []byte("sk-test-0123456789abcdef\n"), 0o600)
	down := fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))

	tests := []struct {
		name    string
		args    []string
		exit    int
		want    []string // each must appear exactly once
		notWant []string
	}{
		{"removing a user who is not a member", []string{"gateway", "member", "remove", "demo", "user_nobody"}, 1,
			[]string{"404 user_nobody is not a member of gateway demo (unknown_member)"}, []string{"unknown_gateway"}},
		{"an invalid upstream", []string{"gateway", "add", "--id", "demo2", "--tenant", "acme", "--owner", "user_alice", "--upstream", "ftp://x"}, 1,
			[]string{`upstream "ftp://x": want http(s)://host[:port][/path]`, "invalid"}, []string{"registry:"}},
		{"the admin listener is down", []string{"gateway", "list", "--admin-url", down}, 1,
			[]string{"no admin API at " + down + " (connection refused): is `moltgate serve` running there?"}, nil},
		{"an unknown flag", []string{"gateway", "--idd", "x", "list"}, 2,
			[]string{"flag provided but not defined: -idd", "usage: moltgate gateway create|destroy|rotate-token|status|add|list|show"}, []string{"-token-file", "Usage of"}},
		{"a tool both allowed and denied", []string{"gateway", "skills", "set", "demo", "--allow", "exec", "--deny", "exec"}, 1,
			[]string{`skills: "exec" is both allowed and denied`}, nil},
		{"an allowlist CIDR with host bits set", []string{"gateway", "allowlist", "set", "demo", "10.0.0.5/24"}, 1,
			[]string{`"10.0.0.5/24" has host bits set: write 10.0.0.0/24 for the network, or 10.0.0.5/32 for the one address`}, nil},
		{"gateway add without its required flags", []string{"gateway", "add", "--id", "demo3"}, 2,
			[]string{"gateway: --tenant, --owner, --upstream required", "usage: moltgate gateway add --id ID"}, nil},
		{"keys add without --provider", []string{"keys", "add", "--tenant", "acme", "--secret-file", secretFile}, 2,
			[]string{"keys: --provider required"}, []string{"sk-test"}},
		{"a gateway command without its words", []string{"gateway", "show"}, 2, []string{"usage: moltgate gateway show ID"}, nil},
		{"an upgrade to an image by tag (issue 14)", []string{"gateway", "upgrade", "demo", "--image", "registry.example.test/gw:latest"}, 2,
			[]string{`--image: "registry.example.test/gw:latest" is not pinned by digest`}, nil},
		{"an upgrade of a gateway added by hand (issue 14)", []string{"gateway", "upgrade", "demo", "--image", pinnedImage}, 1,
			[]string{"gateway not provisioned", "not_provisioned"}, nil},
		{"a fleet upgrade with no provisioned gateway (issue 14)", []string{"gateway", "upgrade", "--all", "--image", pinnedImage}, 0,
			[]string{"fleet upgraded to " + pinnedImage + ": 0 gateways in 0 batches"}, nil},
		{"a trusted-proxy gateway's token", []string{"gateway", "add", "--id", "tp", "--tenant", "acme", "--owner", "user_alice",
			"--upstream", "http://127.0.0.1:18790", "--auth-mode", "trusted-proxy"}, 0,
			[]string{"client token (shown once)", "Do not configure the gateway with it", "gateway.auth.mode: trusted-proxy", "allowUsers"},
			[]string{"configure the gateway with it as gateway.auth.token"}},
		{"a token gateway's token", []string{"gateway", "add", "--id", "tok", "--tenant", "acme", "--owner", "user_alice",
			"--upstream", "http://127.0.0.1:18791"}, 0, []string{"configure the gateway with it as gateway.auth.token"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, code := mg.cliRun(t, tt.args...)
			if code != tt.exit {
				t.Errorf("exit status: got %d, want %d\n%s", code, tt.exit, out)
			}
			for _, w := range tt.want {
				if n := strings.Count(out, w); n != 1 {
					t.Errorf("got %d of %q, want it once in:\n%s", n, w, out)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(out, w) {
					t.Errorf("got %q in:\n%s", w, out)
				}
			}
		})
	}

	// A second serve on the same data directory says that another moltgate holds it.
	cfg := filepath.Join(t.TempDir(), "second.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("listen: 127.0.0.1:%d\nadmin_listen: 127.0.0.1:%d\ndata_dir: %s\n",
		testenv.FreePort(t), testenv.FreePort(t), mg.dataDir)), 0o600)
	out, code := mg.cliRun(t, "serve", "--config", cfg)
	if code != 1 || !strings.Contains(out, "data_dir "+mg.dataDir+": another moltgate holds it") {
		t.Errorf("second serve: exit %d, want 1 and that another moltgate holds the data dir:\n%s", code, tail(out, 5))
	}

	// An h2c upgrade is refused for what it is, not as a WebSocket that is not enabled.
	tokOut := mg.cli(t, "gateway", "add", "--id", "h2c", "--tenant", "acme", "--owner", "user_alice", "--upstream", "http://127.0.0.1:18792")
	req, _ := http.NewRequestWithContext(t.Context(), "GET", mg.proxyURL+"/", nil)
	req.Host = "h2c.gw.localhost"
	req.Header.Set("Authorization", "Bearer "+lastLine(tokOut))
	req.Header.Set("Connection", "Upgrade, HTTP2-Settings")
	req.Header.Set("Upgrade", "h2c")
	req.Header.Set("HTTP2-Settings", "AAMAAABkAAQAoAAAAAIAAAAA")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"reason":"upgrade_not_supported"`) {
		t.Errorf("h2c upgrade: got %d %s, want 400 upgrade_not_supported", resp.StatusCode, body)
	}
}

const pinnedImage = "registry.example.test/gw@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
