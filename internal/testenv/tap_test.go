package testenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

// echoUpstream answers with what it received, as headers: X-Got-Host,
// X-Got-Query, X-Got-Body-Sha256, and every request header prefixed with
// X-Got-H-. WebSocket upgrades get an echo server that also sends the
// upgrade's X-Probe header as its first message.
func echoUpstream(t *testing.T) *httptest.Server {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "websocket" {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			ctx := r.Context()
			if err := c.Write(ctx, websocket.MessageText, []byte("probe="+r.Header.Get("X-Probe"))); err != nil {
				return
			}
			for {
				typ, msg, err := c.Read(ctx)
				if err != nil {
					return
				}
				if err := c.Write(ctx, typ, msg); err != nil {
					return
				}
			}
		}
		body, _ := io.ReadAll(r.Body)
		sum := sha256.Sum256(body)
		w.Header().Set("X-Got-Host", r.Host)
		w.Header().Set("X-Got-Query", r.URL.RawQuery)
		w.Header().Set("X-Got-Body-Sha256", hex.EncodeToString(sum[:]))
		for k, vs := range r.Header {
			for _, v := range vs {
				w.Header().Add("X-Got-H-"+k, v)
			}
		}
		w.WriteHeader(http.StatusTeapot)
	}))
	t.Cleanup(up.Close)
	return up
}

// TestTap runs its cases inside one subtest so that the taps and the
// upstream are closed before goleak looks: packages under goleak use Tap.
func TestTap(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	t.Run("cases", testTapCases)
	http.DefaultClient.CloseIdleConnections()
}

func testTapCases(t *testing.T) {
	up := echoUpstream(t)

	t.Run("forwards unchanged and records", func(t *testing.T) {
		tap := Tap(t, up.URL)
		body := `{"tool":"sessions_list","args":{}}`
		req, _ := http.NewRequestWithContext(t.Context(), "POST", tap.URL+"/tools/invoke?a=1;b=2&c=%2F", strings.NewReader(body))
		req.Host = "tenant.example.com"
		req.Header.Set("Authorization", "Bearer secret")
		req.Header.Add("X-Forwarded-For", "203.0.113.5")
		req.Header.Add("X-Forwarded-For", "198.51.100.7")
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("X-Forwarded-Host", "tenant.example.com")
		req.Header.Set("X-Forwarded-User", "alice@example.com")
		req.Header.Set("Forwarded", "for=203.0.113.5")
		req.Header.Set("Cookie", "__session=abc")
		// Sent as is by the client below, which adds no Accept-Encoding.
		resp, err := (&http.Client{Transport: &http.Transport{DisableCompression: true}}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTeapot {
			t.Fatalf("status: got %d, want 418", resp.StatusCode)
		}
		sum := sha256.Sum256([]byte(body))
		for _, c := range []struct{ header, want string }{
			{"X-Got-Host", "tenant.example.com"},
			{"X-Got-Query", "a=1;b=2&c=%2F"},
			{"X-Got-Body-Sha256", hex.EncodeToString(sum[:])},
			{"X-Got-H-Authorization", "Bearer secret"},
			{"X-Got-H-X-Forwarded-Proto", "https"},
			{"X-Got-H-X-Forwarded-Host", "tenant.example.com"},
			{"X-Got-H-X-Forwarded-User", "alice@example.com"},
			{"X-Got-H-Forwarded", "for=203.0.113.5"},
			{"X-Got-H-Cookie", "__session=abc"},
		} {
			if got := resp.Header.Get(c.header); got != c.want {
				t.Errorf("upstream %s: got %q, want %q", c.header, got, c.want)
			}
		}
		if got := resp.Header.Get("X-Got-H-Accept-Encoding"); got != "" {
			t.Errorf("upstream Accept-Encoding: got %q, want none (the client sent none)", got)
		}
		if got := resp.Header.Values("X-Got-H-X-Forwarded-For"); strings.Join(got, ",") != "203.0.113.5,198.51.100.7" {
			t.Errorf("upstream X-Forwarded-For: got %q, want both values unchanged", got)
		}

		rec := tap.Last()
		if rec.Method != "POST" || rec.Path != "/tools/invoke" || rec.RawQuery != "a=1;b=2&c=%2F" ||
			rec.Host != "tenant.example.com" || string(rec.Body) != body || rec.BodyTooLarge || rec.Status != http.StatusTeapot {
			t.Fatalf("recorded %+v: want the request as sent, status 418", rec)
		}
		if rec.Header.Get("Authorization") != "Bearer secret" || rec.Header.Get("Cookie") != "__session=abc" {
			t.Fatalf("recorded headers %v: want Authorization and Cookie", rec.Header)
		}
	})

	t.Run("large body forwarded intact, not kept", func(t *testing.T) {
		tap := Tap(t, up.URL)
		big := bytes.Repeat([]byte("0123456789abcdef"), (TapBodyLimit+1000)/16)
		resp, err := http.Post(tap.URL+"/big", "application/octet-stream", bytes.NewReader(big))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		sum := sha256.Sum256(big)
		if got := resp.Header.Get("X-Got-Body-Sha256"); got != hex.EncodeToString(sum[:]) {
			t.Fatalf("upstream body hash: got %s, want %x", got, sum)
		}
		rec := tap.Last()
		if !rec.BodyTooLarge || rec.Body != nil {
			t.Fatalf("recorded BodyTooLarge %v, %d body bytes: want true, none", rec.BodyTooLarge, len(rec.Body))
		}
	})

	t.Run("exactly the limit is kept", func(t *testing.T) {
		tap := Tap(t, up.URL)
		body := bytes.Repeat([]byte("x"), TapBodyLimit)
		resp, err := http.Post(tap.URL+"/limit", "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if rec := tap.Last(); rec.BodyTooLarge || !bytes.Equal(rec.Body, body) {
			t.Fatalf("recorded BodyTooLarge %v, %d bytes: want false, %d", rec.BodyTooLarge, len(rec.Body), len(body))
		}
	})

	t.Run("requests, reset and wait", func(t *testing.T) {
		tap := Tap(t, up.URL)
		for _, p := range []string{"/a", "/b"} {
			resp, err := http.Get(tap.URL + p)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
		if reqs := tap.Requests(); len(reqs) != 2 || reqs[0].Path != "/a" || reqs[1].Path != "/b" {
			t.Fatalf("Requests: got %+v, want /a then /b", reqs)
		}
		if _, ok := tap.WaitFor(func(r Recorded) bool { return r.Path == "/b" }, time.Second); !ok {
			t.Fatal("WaitFor /b: not found among past requests")
		}
		tap.Reset()
		if reqs := tap.Requests(); len(reqs) != 0 {
			t.Fatalf("Requests after Reset: got %d, want 0", len(reqs))
		}
		if _, ok := tap.WaitFor(func(r Recorded) bool { return r.Path == "/b" }, 50*time.Millisecond); ok {
			t.Fatal("WaitFor /b after Reset: found, want timeout")
		}
		done := make(chan bool)
		go func() {
			_, ok := tap.WaitFor(func(r Recorded) bool { return r.Path == "/c" && r.Status != 0 }, 10*time.Second)
			done <- ok
		}()
		resp, err := http.Get(tap.URL + "/c")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if !<-done {
			t.Fatal("WaitFor /c with status: timed out")
		}
	})

	t.Run("websocket passes through", func(t *testing.T) {
		tap := Tap(t, up.URL)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(tap.URL, "http")+"/ws?x=1",
			&websocket.DialOptions{HTTPHeader: http.Header{"X-Probe": {"p1"}}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		_, msg, err := c.Read(ctx)
		if err != nil || string(msg) != "probe=p1" {
			t.Fatalf("first message: got %q (%v), want probe=p1", msg, err)
		}
		if err := c.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
			t.Fatal(err)
		}
		if _, msg, err = c.Read(ctx); err != nil || string(msg) != "hello" {
			t.Fatalf("echo: got %q (%v), want hello", msg, err)
		}
		c.Close(websocket.StatusNormalClosure, "")
		rec := tap.Last()
		if rec.Upgrade != "websocket" || rec.Status != http.StatusSwitchingProtocols || rec.Path != "/ws" || rec.RawQuery != "x=1" {
			t.Fatalf("recorded %+v: want the upgrade to /ws?x=1 with status 101", rec)
		}
	})

	t.Run("last fails when empty", func(t *testing.T) {
		tap := Tap(t, up.URL)
		ft := &fatalTB{TB: t}
		runFatal(ft, func() { tap.t = ft; tap.Last() })
		if !strings.Contains(ft.msg, "recorded no request") {
			t.Fatalf("Last on an empty tap: got %q, want a failure", ft.msg)
		}
	})
}
