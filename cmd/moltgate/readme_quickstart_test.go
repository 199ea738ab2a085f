package main_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moltgate/moltgate/internal/testenv"
)

// quickStartBlock is one shell block of the README's quick start.
type quickStartBlock struct {
	script     string
	background bool   // keeps running (a server); the next block starts once ready answers
	ready      string // URL that answers 200 once a background block is up
}

var (
	markerRE = regexp.MustCompile(`^<!-- quickstart: (.*) -->$`)
	readyRE  = regexp.MustCompile(`^background, ready when (\S+) answers$`)
)

// readmeQuickStart returns the shell blocks between the README's quickstart markers. Every
// block there must say how it runs (a marker line just before it), so none is skipped.
func readmeQuickStart(t *testing.T) []quickStartBlock {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	begin, end := strings.Index(text, "<!-- quickstart:begin -->"), strings.Index(text, "<!-- quickstart:end -->")
	if begin < 0 || end < begin {
		t.Fatal("README: no <!-- quickstart:begin --> … <!-- quickstart:end --> section")
	}
	var blocks []quickStartBlock
	var marker string
	lines := strings.Split(text[begin:end], "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if m := markerRE.FindStringSubmatch(line); m != nil {
			marker = m[1]
			continue
		}
		if !strings.HasPrefix(line, "```") {
			continue
		}
		if line != "```sh" {
			t.Fatalf("README quick start: a %q block; want only sh blocks", line)
		}
		var b quickStartBlock
		switch m := readyRE.FindStringSubmatch(marker); {
		case m != nil:
			b.background, b.ready = true, m[1]
		case marker == "run":
		default:
			t.Fatalf("README quick start: a sh block after marker %q; want \"run\" or \"background, ready when URL answers\"", marker)
		}
		marker = ""
		var script []string
		for i++; i < len(lines) && lines[i] != "```"; i++ {
			script = append(script, lines[i])
		}
		b.script = strings.Join(script, "\n") + "\n"
		blocks = append(blocks, b)
	}
	return blocks
}

// Issue 16: the README's quick start, run as written. Its shell blocks run in order from a
// fresh directory holding what a clone has after `make run` (the built binary in bin/, the
// pinned OpenClaw in .cache/openclaw; `make` itself is a stand-in for its targets), with the
// quick start's fixed ports replaced by free ones. The background blocks are moltgate and an
// OpenClaw gateway run by hand; `gateway create` provisions another with the local driver.
// The blocks must reach both gateways through moltgate, be refused where the README says,
// and print a launch link that signs a browser in and loads the Control UI.
func TestREADMEQuickStart(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "od", "tr", "grep"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the quick start needs %s on PATH: %v", tool, err)
		}
	}
	blocks := readmeQuickStart(t)
	if len(blocks) < 3 {
		t.Fatalf("README quick start: %d shell blocks, want moltgate, a gateway, and the commands", len(blocks))
	}
	dir := t.TempDir()
	listen, adminListen, gatewayPort := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	ports := strings.NewReplacer("127.0.0.1:8080", "127.0.0.1:"+strconv.Itoa(listen),
		"127.0.0.1:9090", "127.0.0.1:"+strconv.Itoa(adminListen), "18789", strconv.Itoa(gatewayPort))

	// The clone after make: bin/moltgate, .cache/openclaw, and a make that has done its part.
	for link, target := range map[string]string{"bin/moltgate": binary, ".cache/openclaw": testenv.OpenClawDir(t)} {
		os.MkdirAll(filepath.Join(dir, filepath.Dir(link)), 0o700)
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	shim := filepath.Join(dir, ".shim")
	os.Mkdir(shim, 0o700)
	makeShim := "#!/bin/sh\n# make as the quick start uses it: the test built bin/moltgate, and OpenClaw is installed.\n" +
		"case \"$1\" in\nrun) exec bin/moltgate serve ;;\nopenclaw|testdeps) exit 0 ;;\nesac\n" +
		"echo \"make $*: not a target the quick start uses\" >&2\nexit 2\n"
	if err := os.WriteFile(filepath.Join(shim, "make"), []byte(makeShim), 0o700); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, ".tmp")
	os.Mkdir(tmp, 0o700)
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		// A developer's moltgate or OpenClaw settings must not reach the quick start.
		if strings.HasPrefix(k, "MOLTGATE_") || strings.HasPrefix(k, "OPENCLAW_") || strings.HasPrefix(k, "CLAWDBOT_") ||
			k == "NODE_OPTIONS" || k == "PATH" || k == "TMPDIR" {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "PATH="+shim+string(os.PathListSeparator)+os.Getenv("PATH"), "TMPDIR="+tmp,
		// The defaults' ports, moved to free ones: serve's listeners and the CLI's admin URL.
		fmt.Sprintf("MOLTGATE_LISTEN=127.0.0.1:%d", listen), fmt.Sprintf("MOLTGATE_ADMIN_LISTEN=127.0.0.1:%d", adminListen),
		fmt.Sprintf("MOLTGATE_ADMIN_URL=http://127.0.0.1:%d", adminListen))

	var out strings.Builder
	launched := false
	for i, b := range blocks {
		script := ports.Replace(b.script)
		if b.background {
			cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
			cmd.Dir, cmd.Env = dir, env
			p := testenv.Start(t, cmd, filepath.Join(dir, fmt.Sprintf("block%d.log", i+1)), 15*time.Second)
			waitReady(t, p, ports.Replace(b.ready), filepath.Join(dir, fmt.Sprintf("block%d.log", i+1)))
			continue
		}
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
		cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
		cmd.Dir, cmd.Env = dir, env
		got, err := cmd.CombinedOutput()
		cancel()
		out.Write(got)
		if err != nil {
			t.Fatalf("quick start block %d: %v\n%s\n--- output ---\n%s", i+1, err, script, got)
		}
		// A launch link is good once, within a minute, while its gateway exists: follow it
		// as soon as a block prints it.
		if link := launchLinkRE(listen).FindString(string(got)); link != "" && !launched {
			followLaunch(t, link, listen)
			launched = true
		}
	}
	if !launched {
		t.Errorf("no block printed a launch link (gateway open):\n%s", out.String())
	}

	got := out.String()
	for _, want := range []string{
		fmt.Sprintf("demo is ready and answers through moltgate at http://demo.gw.localhost:%d", listen),
		`{"error":"unauthenticated","reason":"unauthenticated","decision_id":"`,
		`{"error":"not found","reason":"unknown_gateway","decision_id":"`,
		`moltgate_http_requests_total{code="4xx",decision="deny",route="unknown"} 1`,
		"data/audit: ok:",
		`{"ok":true,"status":"live"}`, // the hand-run gateway's own /health, through moltgate
		"demo destroyed",
		"removed mine",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the quick start's output lacks %s:\n%s", want, got)
		}
	}
}

// launchLinkRE matches a launch link of gateway demo on the proxy port listen.
func launchLinkRE(listen int) *regexp.Regexp {
	return regexp.MustCompile(`http://demo\.gw\.localhost:` + strconv.Itoa(listen) + `/\.moltgate/launch\?code=[A-Za-z0-9_-]+`)
}

// followLaunch follows a launch link as a browser does: a session cookie for the gateway's
// host, then the gateway's Control UI. (*.localhost is loopback, as in Chromium and curl.)
func followLaunch(t *testing.T, link string, listen int) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Timeout: 30 * time.Second, Jar: jar, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, "127.0.0.1:"+strconv.Itoa(listen))
		}}}
	defer client.CloseIdleConnections()
	resp, err := client.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	cookies := jar.Cookies(resp.Request.URL)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "<title>OpenClaw Control</title>") || len(cookies) == 0 {
		t.Fatalf("following the launch link: %d, cookies %d, page %.300s; want the Control UI with a session", resp.StatusCode, len(cookies), page)
	}
}

// waitReady polls url until it answers 200, failing the test if the background block ends
// first or nothing answers within three minutes (an OpenClaw start takes 15-30 s; more on
// loaded cores).
func waitReady(t *testing.T, p *testenv.Process, url, log string) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if done, err := p.Exited(); done {
			b, _ := os.ReadFile(log)
			t.Fatalf("a background block of the quick start ended (%v) before %s answered:\n%s", err, url, tail(string(b), 30))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer within 3 minutes", url)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
