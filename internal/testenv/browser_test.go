package testenv

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"
)

// The browser keeps what a test asks of it: a cookie set for a host is sent to that host
// only, a page's WebSocket messages are seen both ways, and a screenshot is a PNG in both
// places it is kept.
func TestBrowser(t *testing.T) {
	shots := t.TempDir()
	t.Setenv("MOLTGATE_SCREENSHOTS", shots)
	cookies := make(chan string, 8)
	page := `<!doctype html><title>t</title><p id=p>hello</p><script>
const ws = new WebSocket("ws://" + location.host + "/ws");
ws.onmessage = (e) => { document.getElementById("p").textContent = e.data; };
ws.onopen = () => ws.send("from the page");
</script>`
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ws" {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			_, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			c.Write(r.Context(), websocket.MessageText, []byte("echo: "+string(msg)))
			c.Close(websocket.StatusNormalClosure, "")
			return
		}
		if r.URL.Path != "/" {
			http.NotFound(w, r) // the favicon
			return
		}
		cookies <- r.Host + " " + r.Header.Get("Cookie")
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte(page))
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	port := ln.Addr().(*net.TCPAddr).Port
	site := "http://a.gw.localhost:" + strconv.Itoa(port)

	b := Browser(t)
	b.SetCookie(site, "__session", "tok")
	if err := b.Do(30*time.Second, chromedp.Navigate(site+"/")); err != nil {
		t.Fatal(err)
	}
	if got := <-cookies; got != "a.gw.localhost:"+strconv.Itoa(port)+" __session=tok" {
		t.Errorf("the page's request carried %q, want the cookie on its host", got)
	}
	if _, ok := b.WaitWSFrame(10*time.Second, func(f WSFrame) bool { return f.Sent && f.Data == "from the page" }); !ok {
		t.Error("the page's sent message was not seen")
	}
	if _, ok := b.WaitWSFrame(10*time.Second, func(f WSFrame) bool { return !f.Sent && f.Data == "echo: from the page" }); !ok {
		t.Error("the page's received message was not seen")
	}
	text, err := Eval[string](b, 10*time.Second, `new Promise(r => { const p = document.getElementById("p"); const check = () => p.textContent.startsWith("echo") ? r(p.textContent) : setTimeout(check, 50); check(); })`)
	if err != nil || text != "echo: from the page" {
		t.Errorf("page text %q (%v), want the echo", text, err)
	}
	// Another host of the same domain gets no cookie.
	if err := b.Do(30*time.Second, chromedp.Navigate("http://b.gw.localhost:"+strconv.Itoa(port)+"/")); err != nil {
		t.Fatal(err)
	}
	if got := <-cookies; strings.Contains(got, "__session") {
		t.Errorf("another host got %q", got)
	}
	path := b.Screenshot("page")
	data, err := os.ReadFile(path)
	if err != nil || !bytes.HasPrefix(data, []byte("\x89PNG")) || !strings.HasPrefix(path, shots) {
		t.Errorf("screenshot %s: %d bytes (%v), want a PNG in $MOLTGATE_SCREENSHOTS", path, len(data), err)
	}
}
