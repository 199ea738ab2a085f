package main_test

// End-to-end: the built moltgate binary in front of real OpenClaw gateways (token and
// trusted-proxy mode), with the fake Clerk JWKS endpoint, driven through its CLI and HTTP.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
)

// binary is the moltgate built once for this test binary by TestMain.
var binary string

func TestMain(m *testing.M) {
	if benchRole() || wsBenchRole() {
		return
	}
	dir, err := os.MkdirTemp("", "moltgate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "moltgate")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build moltgate:", err)
		os.Exit(1)
	}
	code := m.Run()
	testenv.Cleanup()
	os.RemoveAll(dir)
	os.Exit(code)
}

// instance is one running `moltgate serve`.
type instance struct {
	proxyURL, adminURL string
	dataDir            string
	adminToken         string
	configPath         string // the configuration file it serves with
	cmd                *exec.Cmd
	logPath            string
}

// startMoltgate writes config (YAML, with @LISTEN@, @ADMIN@, @DATA@ and @ADMINTOKEN@ placeholders filled in) and
// runs `moltgate serve --config` until the test ends.
func startMoltgate(t *testing.T, config string) *instance {
	t.Helper()
	return startBinary(t, binary, nil, config)
}

// startBinary is startMoltgate with another build of moltgate (bin) and extra environment.
func startBinary(t testing.TB, bin string, env []string, config string) *instance {
	t.Helper()
	dir := t.TempDir()
	in := &instance{dataDir: filepath.Join(dir, "data"), adminToken: strings.Repeat("ad", 20), logPath: filepath.Join(dir, "moltgate.log")}
	tokFile := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tokFile, []byte(in.adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	adminListen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	config = strings.NewReplacer("@LISTEN@", listen, "@ADMIN@", adminListen, "@DATA@", in.dataDir, "@ADMINTOKEN@", tokFile).Replace(config)
	cfgPath := filepath.Join(dir, "moltgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	in.configPath = cfgPath
	logf, err := os.Create(in.logPath)
	if err != nil {
		t.Fatal(err)
	}
	in.cmd = exec.Command(bin, "serve", "--config", cfgPath)
	in.cmd.Env = append(os.Environ(), env...)
	in.cmd.Stdout, in.cmd.Stderr = logf, logf
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- in.cmd.Wait() }()
		lines := 40
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			// Hung: SIGQUIT makes the Go runtime write every goroutine's stack to the log
			// before it exits, which is what finding the hang takes.
			in.cmd.Process.Signal(syscall.SIGQUIT)
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				in.cmd.Process.Kill()
				<-done
			}
			lines = 600
			t.Error("moltgate did not stop within 20s of SIGTERM; its goroutines are in the log below")
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(in.logPath)
			t.Logf("moltgate log:\n%s", tail(string(b), lines))
		}
	})
	in.proxyURL, in.adminURL = "http://"+listen, "http://"+adminListen
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(in.adminURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return in
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(in.logPath)
			t.Fatalf("moltgate not ready after 30s: %v\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cli runs a moltgate CLI command against in and returns its output.
func (in *instance) cli(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary, append(args[:1:1], append([]string{"--admin-url", in.adminURL}, args[1:]...)...)...)
	cmd.Env = append(os.Environ(), "MOLTGATE_ADMIN_TOKEN="+in.adminToken)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("moltgate %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// admin returns an admin API client of in, with the admin token.
func (in *instance) admin() *admin.Client {
	return &admin.Client{BaseURL: in.adminURL, Token: in.adminToken, HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// events returns the audit events written so far, after verifying their chain.
func (in *instance) events(t *testing.T) []audit.Event {
	t.Helper()
	dir := filepath.Join(in.dataDir, "audit")
	if _, err := audit.VerifyDir(dir); err != nil {
		t.Fatalf("audit chain: %v", err)
	}
	var out []audit.Event
	files, _ := filepath.Glob(filepath.Join(dir, "events-*.jsonl"))
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			var e audit.Event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatal(err)
			}
			out = append(out, e)
		}
		fh.Close()
	}
	return out
}

// clientFrom returns an HTTP client whose connections come from the loopback address src,
// so one test can be both an untrusted client (127.0.0.1) and a trusted proxy (127.0.0.2).
func clientFrom(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// postJSON sends body to url with the bearer token (and Host, if not empty) and returns the
// status and body of the answer.
func postJSON(t *testing.T, url, host, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "POST", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// clerkConfig is the clerk: section of a moltgate config that trusts the fake Clerk c, its
// secret key in a file of the test's own.
func clerkConfig(t testing.TB, c *clerktest.Server) string {
	t.Helper()
	secretFile := filepath.Join(t.TempDir(), "clerk.key")
	if err := os.WriteFile(secretFile, []byte(c.SecretKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("clerk:\n  api_url: %s\n  secret_key: {file: %s}\n  issuer: %s\n  authorized_parties: [%s]\n",
		c.URL, secretFile, c.Issuer(), clerktest.DefaultAuthorizedParty)
}
