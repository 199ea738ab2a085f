package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// OpenClaw modes for [OpenClawOptions.Mode].
const (
	ModeToken        = "token"
	ModeTrustedProxy = "trusted-proxy"
)

const (
	// openClawStartTimeout bounds the wait for /readyz; a start takes 8–16 s
	// on two idle cores, 30 s on loaded ones, and was seen past 100 s with
	// the whole suite beside other builds on two cores.
	// MOLTGATE_OPENCLAW_START_TIMEOUT (a Go duration) overrides it.
	openClawStartTimeout = 3 * time.Minute
	// openClawStopGrace is how long SIGTERM gets before SIGKILL; a clean stop
	// takes about 3.5 s.
	openClawStopGrace = 10 * time.Second
)

// OpenClawOptions configures a test gateway.
type OpenClawOptions struct {
	// Mode is ModeToken (the default) or ModeTrustedProxy.
	Mode string
	// Token is gateway.auth.token in token mode. When empty a random one is
	// generated; read it back from OpenClawGateway.Token.
	Token string

	// TrustedProxies is gateway.trustedProxies. In trusted-proxy mode it
	// defaults to ["127.0.0.1"]; in token mode it is left unset, so any
	// forwarded header from the loopback peer is refused with
	// proxy_attribution_required.
	TrustedProxies []string
	// TrustedProxyUsers is gateway.auth.trustedProxy.allowUsers (trusted-proxy
	// mode). Empty admits every user the proxy names.
	TrustedProxyUsers []string
	// UserHeader is gateway.auth.trustedProxy.userHeader, default
	// "x-forwarded-user".
	UserHeader string
	// RequiredHeaders is gateway.auth.trustedProxy.requiredHeaders, default
	// ["x-forwarded-proto"]. Use an empty non-nil slice for none.
	RequiredHeaders []string
	// IdentityScopes is gateway.auth.identityScopes: user -> operator scopes
	// granted to WebSocket sessions in trusted-proxy mode.
	IdentityScopes map[string][]string

	// ExtraConfig is merged into the generated openclaw.json, maps merged
	// key by key and anything else replacing what is there, for example
	// {"models": {"providers": {...}}}.
	ExtraConfig map[string]any
	// Env adds environment variables to the gateway process.
	Env map[string]string
}

// OpenClawGateway is a running OpenClaw gateway on a loopback port.
type OpenClawGateway struct {
	// URL is the base URL, http://127.0.0.1:Port.
	URL string
	// WSURL is the WebSocket URL, ws://127.0.0.1:Port/.
	WSURL string
	// Port is the gateway's TCP port on 127.0.0.1.
	Port int
	// Token is the gateway token (token mode only).
	Token string
	// Mode is the auth mode the gateway runs in.
	Mode string
	// Dir holds the gateway's HOME, TMPDIR, state, config and logs.
	Dir string
	// ConfigPath is the openclaw.json the gateway was started with.
	ConfigPath string
	// LogPath captures the gateway's stdout and stderr.
	LogPath string
	// Config is the configuration written to ConfigPath.
	Config map[string]any
	// Startup says how long the start took: until /readyz answered 200, and
	// until connect stopped answering UNAVAILABLE (with the number of
	// refused connects).
	Startup StartupStats

	mu   sync.Mutex
	proc *process
}

// StartupStats times a gateway start.
type StartupStats struct {
	Readyz      time.Duration
	Connect     time.Duration
	Unavailable int
}

func (s StartupStats) String() string {
	return fmt.Sprintf("/readyz after %v, connect after %v (%d UNAVAILABLE)",
		s.Readyz.Round(time.Millisecond), s.Connect.Round(time.Millisecond), s.Unavailable)
}

// OpenClawDir returns the folder whose node_modules holds Node 24 and
// openclaw: $MOLTGATE_OPENCLAW_DIR, else .cache/openclaw at the repo root
// (where make installs them).
func OpenClawDir(t testing.TB) string {
	t.Helper()
	dir, err := openClawDir()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return dir
}

func openClawDir() (string, error) {
	dir := os.Getenv("MOLTGATE_OPENCLAW_DIR")
	if dir == "" {
		root, err := repoRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, ".cache", "openclaw")
	}
	for _, bin := range []string{"node", "openclaw"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", ".bin", bin)); err != nil {
			return "", fmt.Errorf("OpenClaw not installed in %s (run make test, which installs Node 24 and openclaw there, or set MOLTGATE_OPENCLAW_DIR): %v", dir, err)
		}
	}
	return dir, nil
}

// OpenClaw starts a real OpenClaw gateway for this test and stops it (whole
// process group) when the test ends. Starting one takes about 15 s and 1 GB;
// prefer [SharedOpenClaw] when tests can share a gateway.
func OpenClaw(t testing.TB, opts OpenClawOptions) *OpenClawGateway {
	t.Helper()
	g, err := startOpenClaw(t.TempDir(), opts)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Logf("testenv: OpenClaw gateway (%s) at %s: %v", g.Mode, g.URL, g.Startup)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("testenv: OpenClaw gateway log tail (%s):\n%s", g.LogPath, g.LogTail(60))
		}
		g.Stop()
	})
	return g
}

// shared holds the gateways of SharedOpenClaw, keyed by their options.
var shared struct {
	mu       sync.Mutex
	gateways map[string]*sharedGateway
}

type sharedGateway struct {
	ready chan struct{} // closed when start finished
	gw    *OpenClawGateway
	err   error
	dir   string
}

// SharedOpenClaw returns a gateway shared by every test of the test binary
// that asks for the same options, starting it on first use. The gateway
// outlives the test: the package's TestMain must call [Cleanup] after
// m.Run. (If it does not, the gateway dies with the test binary on Linux, but
// its temporary directory stays behind.) Tests sharing a gateway must not
// depend on its state being fresh: use distinct session keys and users.
//
// In token mode with an empty Token, callers share one generated token.
func SharedOpenClaw(t testing.TB, opts OpenClawOptions) *OpenClawGateway {
	t.Helper()
	if opts.Mode == "" {
		opts.Mode = ModeToken // same gateway as an explicit "token"
	}
	key, err := json.Marshal(opts)
	if err != nil {
		t.Fatalf("testenv: options: %v", err)
	}
	shared.mu.Lock()
	if shared.gateways == nil {
		shared.gateways = map[string]*sharedGateway{}
	}
	sg, ok := shared.gateways[string(key)]
	if !ok {
		sg = &sharedGateway{ready: make(chan struct{})}
		shared.gateways[string(key)] = sg
	}
	shared.mu.Unlock()

	if !ok {
		sg.dir, sg.err = os.MkdirTemp("", "testenv-openclaw-")
		if sg.err == nil {
			sg.gw, sg.err = startOpenClaw(sg.dir, opts)
		}
		close(sg.ready)
		if sg.err == nil {
			t.Logf("testenv: shared OpenClaw gateway (%s) at %s: %v", sg.gw.Mode, sg.gw.URL, sg.gw.Startup)
		}
	}
	<-sg.ready
	if sg.err != nil {
		t.Fatalf("testenv: shared OpenClaw gateway: %v", sg.err)
	}
	return sg.gw
}

// Cleanup stops the gateways started by [SharedOpenClaw] and removes their
// directories. Call it from TestMain after m.Run.
func Cleanup() {
	shared.mu.Lock()
	gws := shared.gateways
	shared.gateways = nil
	shared.mu.Unlock()

	var wg sync.WaitGroup
	for _, sg := range gws {
		wg.Go(func() {
			<-sg.ready
			if sg.gw != nil {
				sg.gw.Stop()
			}
			if sg.dir != "" {
				_ = os.RemoveAll(sg.dir)
			}
		})
	}
	wg.Wait()
}

func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// startOpenClaw starts a gateway under dir and waits until it accepts
// WebSocket connects. A port lost to another process between choosing and
// binding, or a start the gateway gave up on a starved machine, gets a second
// and third try on new ports.
func startOpenClaw(dir string, opts OpenClawOptions) (*OpenClawGateway, error) {
	ocDir, err := openClawDir()
	if err != nil {
		return nil, err
	}
	switch opts.Mode {
	case "":
		opts.Mode = ModeToken
	case ModeToken, ModeTrustedProxy:
	default:
		return nil, fmt.Errorf("unknown OpenClaw mode %q", opts.Mode)
	}
	if opts.Mode == ModeToken && opts.Token == "" {
		opts.Token = randomToken()
	}
	if opts.Mode == ModeTrustedProxy && opts.Token != "" {
		return nil, errors.New("trusted-proxy mode cannot be combined with a gateway token (the gateway refuses to start)")
	}

	timeout, err := startTimeout()
	if err != nil {
		return nil, err
	}
	startSlots <- struct{}{}
	defer func() { <-startSlots }()

	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		g, err := startOpenClawOnce(filepath.Join(dir, "gw"+strconv.Itoa(attempt)), ocDir, port, timeout, opts)
		if err == nil {
			return g, nil
		}
		lastErr = err
		if !errors.Is(err, errPortInUse) && !errors.Is(err, errStarved) {
			break
		}
	}
	return nil, lastErr
}

// startupCloseCode closes a connect refused during startup (try again later).
const startupCloseCode websocket.StatusCode = 1013

var errPortInUse = errors.New("port in use")

// errStarved: the gateway gave up its own start because its state lease's heartbeat was not
// ready within its fixed 5 s, which happens on a starved machine (seen with the whole suite
// and other builds on two cores). It gets another try, as a lost port does.
var errStarved = errors.New("gateway start starved")

// startSlots limits how many gateways start at once: a start is CPU bound
// for ~10 s, and two at once on two cores each take three times as long,
// which pushes both toward the deadline.
var startSlots = make(chan struct{}, max(1, runtime.NumCPU()/2))

func startTimeout() (time.Duration, error) {
	v := os.Getenv("MOLTGATE_OPENCLAW_START_TIMEOUT")
	if v == "" {
		return openClawStartTimeout, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("MOLTGATE_OPENCLAW_START_TIMEOUT=%q: want a positive Go duration such as 3m", v)
	}
	return d, nil
}

func (opts OpenClawOptions) config(port int, logFile string) map[string]any {
	auth := map[string]any{"mode": opts.Mode}
	gateway := map[string]any{
		"mode": "local",
		"port": port,
		"bind": "loopback",
		"auth": auth,
	}
	trusted := opts.TrustedProxies
	switch opts.Mode {
	case ModeToken:
		auth["token"] = opts.Token
	case ModeTrustedProxy:
		if trusted == nil {
			trusted = []string{"127.0.0.1"}
		}
		userHeader := opts.UserHeader
		if userHeader == "" {
			userHeader = "x-forwarded-user"
		}
		required := opts.RequiredHeaders
		if required == nil {
			required = []string{"x-forwarded-proto"}
		}
		tp := map[string]any{
			"userHeader":      userHeader,
			"requiredHeaders": required,
			// The tap and moltgate connect from 127.0.0.1; without this
			// every request fails with trusted_proxy_loopback_source.
			"allowLoopback": true,
		}
		if len(opts.TrustedProxyUsers) > 0 {
			tp["allowUsers"] = opts.TrustedProxyUsers
		}
		auth["trustedProxy"] = tp
		if len(opts.IdentityScopes) > 0 {
			auth["identityScopes"] = opts.IdentityScopes
		}
	}
	if trusted != nil {
		gateway["trustedProxies"] = trusted
	}
	cfg := map[string]any{
		"gateway": gateway,
		"update":  map[string]any{"checkOnStart": false},
		// Without this the gateway fetches the model catalog at start.
		"models":  map[string]any{"catalogRefresh": map[string]any{"enabled": false}},
		"logging": map[string]any{"file": logFile},
	}
	mergeConfig(cfg, opts.ExtraConfig)
	return cfg
}

// mergeConfig merges src into dst: maps recursively, other values replace.
func mergeConfig(dst, src map[string]any) {
	for k, v := range src {
		sv, sok := v.(map[string]any)
		dv, dok := dst[k].(map[string]any)
		if sok && dok {
			mergeConfig(dv, sv)
			continue
		}
		if sok {
			cp := map[string]any{}
			mergeConfig(cp, sv)
			v = cp
		}
		dst[k] = v
	}
}

// quietEnv keeps the gateway offline and quiet (OPENCLAW.md).
var quietEnv = map[string]string{
	"OPENCLAW_DISABLE_BONJOUR":     "1",
	"OPENCLAW_NO_RESPAWN":          "1",
	"OPENCLAW_SKIP_CHANNELS":       "1",
	"OPENCLAW_NO_AUTO_UPDATE":      "1",
	"OPENCLAW_EXEC_SHELL_SNAPSHOT": "0",
	"OPENCLAW_OFFLINE":             "1",
	"NO_COLOR":                     "1",
	"FORCE_COLOR":                  "0",
}

func gatewayEnv(ocDir, dir, configPath string, extra map[string]string) []string {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		// A developer's OPENCLAW_GATEWAY_TOKEN, profile or state dir must
		// not reach the test gateway; nor may NODE_OPTIONS.
		if strings.HasPrefix(k, "OPENCLAW_") || strings.HasPrefix(k, "CLAWDBOT_") || k == "NODE_OPTIONS" {
			continue
		}
		env[k] = v
	}
	maps.Copy(env, quietEnv)
	env["PATH"] = filepath.Join(ocDir, "node_modules", ".bin") + string(os.PathListSeparator) + os.Getenv("PATH")
	env["HOME"] = filepath.Join(dir, "home")
	env["TMPDIR"] = filepath.Join(dir, "tmp")
	env["OPENCLAW_STATE_DIR"] = filepath.Join(dir, "state")
	env["OPENCLAW_CONFIG_PATH"] = configPath
	maps.Copy(env, extra)
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

func startOpenClawOnce(dir, ocDir string, port int, timeout time.Duration, opts OpenClawOptions) (*OpenClawGateway, error) {
	for _, sub := range []string{"home", "tmp", "state"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, err
		}
	}
	g := &OpenClawGateway{
		URL:        "http://127.0.0.1:" + strconv.Itoa(port),
		WSURL:      "ws://127.0.0.1:" + strconv.Itoa(port) + "/",
		Port:       port,
		Token:      opts.Token,
		Mode:       opts.Mode,
		Dir:        dir,
		ConfigPath: filepath.Join(dir, "openclaw.json"),
		LogPath:    filepath.Join(dir, "gateway.out"),
	}
	g.Config = opts.config(port, filepath.Join(dir, "openclaw.log"))
	data, err := json.MarshalIndent(g.Config, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(g.ConfigPath, data, 0o600); err != nil {
		return nil, err
	}

	cmd := exec.Command(filepath.Join(ocDir, "node_modules", ".bin", "openclaw"), "gateway", "run", "--port", strconv.Itoa(port))
	cmd.Dir = dir
	cmd.Env = gatewayEnv(ocDir, dir, g.ConfigPath, opts.Env)
	g.proc, err = startProcess(cmd, g.LogPath)
	if err != nil {
		return nil, fmt.Errorf("starting openclaw: %w", err)
	}

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := g.waitReady(ctx, opts); err != nil {
		g.Stop()
		tail := g.LogTail(60)
		switch {
		case strings.Contains(tail, "EADDRINUSE") || strings.Contains(tail, "already listening"):
			err = fmt.Errorf("%w: %w", errPortInUse, err)
		case strings.Contains(tail, "state lease heartbeat did not become ready"):
			err = fmt.Errorf("%w: %w", errStarved, err)
		}
		return nil, fmt.Errorf("OpenClaw gateway on port %d not ready after %v: %w\n--- %s (tail) ---\n%s",
			port, time.Since(start).Round(time.Millisecond), err, g.LogPath, tail)
	}
	return g, nil
}

// waitReady polls GET /readyz until 200, then retries a WebSocket connect
// until it stops answering the retryable UNAVAILABLE (startup-sidecars) that
// follows /readyz for about 1.5 s. Any other answer to connect, even a
// refusal, means startup is over.
func (g *OpenClawGateway) waitReady(ctx context.Context, opts OpenClawOptions) error {
	start := time.Now()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	if err := poll(ctx, g.proc, func() (bool, time.Duration, error) {
		resp, err := client.Get(g.URL + "/readyz")
		if err != nil {
			return false, 100 * time.Millisecond, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, 100 * time.Millisecond, fmt.Errorf("/readyz answered %s", resp.Status)
	}); err != nil {
		return err
	}
	g.Startup.Readyz = time.Since(start)

	header := http.Header{}
	var auth map[string]any
	if opts.Mode == ModeToken {
		auth = map[string]any{"token": g.Token}
	} else {
		user := "testenv-probe"
		if len(opts.TrustedProxyUsers) > 0 {
			user = opts.TrustedProxyUsers[0]
		}
		header.Set(cmpOr(opts.UserHeader, "x-forwarded-user"), user)
		header.Set("x-forwarded-proto", "https")
		// Without a non-loopback client address the upgrade is refused
		// with 403 proxy_attribution_required before connect is read.
		header.Set("x-forwarded-for", "203.0.113.5")
		for _, h := range opts.RequiredHeaders {
			if header.Get(h) == "" {
				header.Set(h, "testenv")
			}
		}
	}
	defer func() { g.Startup.Connect = time.Since(start) }()
	return poll(ctx, g.proc, func() (bool, time.Duration, error) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		c, resp, err := DialOpenClaw(cctx, g.WSURL, header)
		if err != nil {
			if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
				// The upgrade itself was refused (an auth decision): the
				// startup gate sits in connect, so startup is over.
				return true, 0, nil
			}
			return false, 100 * time.Millisecond, err
		}
		defer c.Conn.CloseNow()
		res, err := c.Connect(cctx, auth)
		if err != nil {
			if s := websocket.CloseStatus(err); s != -1 && s != startupCloseCode {
				return true, 0, nil // refused handshake, 1008
			}
			return false, 100 * time.Millisecond, err
		}
		if res.Error.startupUnavailable() {
			g.Startup.Unavailable++
			return false, time.Duration(max(res.Error.RetryAfterMs, 50)) * time.Millisecond, res.Error
		}
		return true, 0, nil
	})
}

// poll calls try until it reports done, the process exits or ctx ends.
func poll(ctx context.Context, proc *process, try func() (done bool, wait time.Duration, err error)) error {
	for {
		done, wait, err := try()
		if done {
			return nil
		}
		timer := time.NewTimer(wait)
		select {
		case <-proc.done:
			timer.Stop()
			return fmt.Errorf("gateway exited: %v (last probe: %v)", proc.exitError(), err)
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("%w (last probe: %v)", ctx.Err(), err)
		case <-timer.C:
		}
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// LogTail returns the last n lines of the gateway's stdout and stderr.
func (g *OpenClawGateway) LogTail(n int) string {
	return tailFile(g.LogPath, n)
}

// Stop stops the gateway and every process it started: SIGTERM to its
// process group, SIGKILL after 10 s. It is safe to call more than once.
func (g *OpenClawGateway) Stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.proc != nil {
		g.proc.stop(syscall.SIGTERM, openClawStopGrace)
		g.proc = nil
	}
}
