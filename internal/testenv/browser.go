package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// browserStartTimeout bounds Chromium's start and first page; a cold start on two loaded
// cores takes a few seconds.
const browserStartTimeout = 60 * time.Second

// Chromium is a headless Chromium with a profile of its own (cookies, storage, the Control
// UI's device identity), driven through chromedp: one person's browser. Start one with
// [Browser].
type Chromium struct {
	t   testing.TB
	ctx context.Context // the tab's chromedp context; cancelled when the test ends

	shotDir string // screenshots, under the test's temporary directory

	mu      sync.Mutex
	console []string  // console messages and uncaught exceptions, in order
	frames  []WSFrame // WebSocket messages, in order, up to maxFrames
	changed chan struct{}
	shots   int
}

// WSFrame is one WebSocket message of the page, as the browser sent or received it.
type WSFrame struct {
	Sent bool   // the page sent it; else it received it
	Data string // the text, or the binary payload, truncated at maxFrameBytes
}

// What a Chromium keeps of a page's WebSocket traffic.
const (
	maxFrames     = 5000
	maxFrameBytes = 1 << 20
)

// Browser starts a fresh headless Chromium for this test (Debian's chromium, or
// $MOLTGATE_CHROMIUM) with an empty profile, and stops it when the test ends. A test that
// fails leaves a screenshot of the page, whose path it logs. A missing Chromium fails the
// test with a hint; it never skips.
func Browser(t testing.TB) *Chromium {
	t.Helper()
	bin, err := chromiumPath()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	profile := t.TempDir()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.UserDataDir(profile),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// The tests talk to loopback only; an environment proxy must not see it.
		chromedp.Flag("no-proxy-server", true),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithErrorf(func(format string, args ...any) {
		t.Logf("testenv: chromedp: "+format, args...)
	}))
	b := &Chromium{t: t, ctx: ctx, shotDir: t.TempDir(), changed: make(chan struct{})}
	start, cancelStart := context.WithTimeout(ctx, browserStartTimeout)
	defer cancelStart()
	// The first action starts the browser: it must run on the tab's own context, whose life
	// is the browser's (a timeout on it would stop the browser), so the start is bounded by
	// a watchdog instead.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx, chromedp.Navigate("about:blank")) }()
	select {
	case err = <-started:
	case <-start.Done():
		err = fmt.Errorf("no page after %v", browserStartTimeout)
	}
	if err != nil {
		cancelTab()
		cancelAlloc()
		t.Fatalf("testenv: starting %s: %v", bin, err)
	}
	// WebSocket messages are network events, reported once the domain is on.
	if err := chromedp.Listen(ctx, b.recordFrame); err != nil {
		t.Fatalf("testenv: listen to the tab: %v", err)
	}
	if _, err := chromedp.Call(start, network.Enable, network.EnableParams{}); err != nil {
		t.Fatalf("testenv: enable network events: %v", err)
	}
	consoleDone := make(chan struct{})
	messages := chromedp.Console(ctx)
	go func() {
		defer close(consoleDone)
		for m, err := range messages {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.console = append(b.console, string(m.Type)+": "+m.String())
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		if t.Failed() {
			if path, err := b.screenshot("failure"); err == nil {
				t.Logf("testenv: screenshot of the failed page: %s", path)
			} else {
				t.Logf("testenv: no screenshot of the failed page: %v", err)
			}
			t.Logf("testenv: browser console (last 40):\n%s", b.ConsoleTail(40))
		}
		cancelTab()
		cancelAlloc()
		<-consoleDone
	})
	return b
}

// chromiumPath finds the browser: $MOLTGATE_CHROMIUM, else chromium on PATH.
func chromiumPath() (string, error) {
	if p := os.Getenv("MOLTGATE_CHROMIUM"); p != "" {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("chromium not found (make test installs Debian's chromium; or apt-get install chromium, or set MOLTGATE_CHROMIUM)")
}

// recordFrame keeps the page's WebSocket messages; chromedp calls it in order, from the loop
// that reads the tab's messages.
func (b *Chromium) recordFrame(ev any) {
	var f WSFrame
	switch ev := ev.(type) {
	case *network.EventWebSocketFrameReceived:
		if ev.Response == nil {
			return
		}
		f = WSFrame{Data: string(ev.Response.PayloadData)}
	case *network.EventWebSocketFrameSent:
		if ev.Response == nil {
			return
		}
		f = WSFrame{Sent: true, Data: string(ev.Response.PayloadData)}
	default:
		return
	}
	if len(f.Data) > maxFrameBytes {
		f.Data = f.Data[:maxFrameBytes]
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.frames) < maxFrames {
		b.frames = append(b.frames, f)
	}
	close(b.changed)
	b.changed = make(chan struct{})
}

// WaitWSFrame returns the first WebSocket message of the page, past or future, for which
// match is true, waiting up to timeout; ok is false on timeout.
func (b *Chromium) WaitWSFrame(timeout time.Duration, match func(WSFrame) bool) (f WSFrame, ok bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	seen := 0
	for {
		b.mu.Lock()
		frames, changed := b.frames[seen:], b.changed
		seen = len(b.frames)
		b.mu.Unlock()
		for _, f := range frames {
			if match(f) {
				return f, true
			}
		}
		select {
		case <-changed:
		case <-timer.C:
			return WSFrame{}, false
		}
	}
}

// ConsoleTail returns the page's last n console lines.
func (b *Chromium) ConsoleTail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	lines := b.console
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Context is the tab's chromedp context, for actions this type does not wrap.
func (b *Chromium) Context() context.Context { return b.ctx }

// Do runs chromedp actions in the tab, in order, giving up after timeout.
func (b *Chromium) Do(timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// Eval evaluates a JavaScript expression in the page and decodes its value into T (see
// [chromedp.Evaluate]); a promise is awaited.
func Eval[T any](b *Chromium, timeout time.Duration, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

// OnNewDocument runs script in every page the tab loads from now on, before the page's own
// scripts: a person's devtools snippet, say, that keeps hold of the page's sockets.
func (b *Chromium) OnNewDocument(script string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: script}); err != nil {
		b.t.Fatalf("testenv: add a script to new documents: %v", err)
	}
}

// SetCookie stores a cookie as the site at url would have set it: host-only for url's host,
// path /, HttpOnly, SameSite=Lax, Secure when url is https.
func (b *Chromium) SetCookie(url, name, value string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	_, err := chromedp.Call(ctx, network.SetCookie, network.SetCookieParams{
		Name: name, Value: value, URL: url, Path: "/",
		HTTPOnly: new(true), Secure: new(strings.HasPrefix(url, "https:")), SameSite: network.CookieSameSiteLax,
	})
	if err != nil {
		b.t.Fatalf("testenv: set cookie %s for %s: %v", name, url, err)
	}
}

// Screenshot saves a PNG of the whole page as <name>.png under the test's temporary
// directory and, when $MOLTGATE_SCREENSHOTS names a directory, a copy there (named after the
// test), and returns the first path. A failure to take it fails the test.
func (b *Chromium) Screenshot(name string) string {
	b.t.Helper()
	path, err := b.screenshot(name)
	if err != nil {
		b.t.Fatalf("testenv: screenshot %s: %v", name, err)
	}
	return path
}

var unsafeFileChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func (b *Chromium) screenshot(name string) (string, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		return "", err
	}
	b.mu.Lock()
	b.shots++
	n := b.shots
	b.mu.Unlock()
	file := fmt.Sprintf("%02d-%s.png", n, unsafeFileChars.ReplaceAllString(name, "_"))
	path := filepath.Join(b.shotDir, file)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		return "", err
	}
	if dir := os.Getenv("MOLTGATE_SCREENSHOTS"); dir != "" {
		keep := filepath.Join(dir, unsafeFileChars.ReplaceAllString(b.t.Name(), "_")+"-"+file)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return path, err
		}
		if err := os.WriteFile(keep, png, 0o644); err != nil {
			return path, err
		}
		return keep, nil
	}
	return path, nil
}
