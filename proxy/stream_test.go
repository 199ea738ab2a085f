package proxy_test

import (
	"bufio"
	"net/http"
	"testing"
	"time"

	"github.com/moltgate/moltgate/registry"
)

// TestStreamedResponsesFlowAtOnce: a response whose length is unknown (a chat or agent
// stream) or that is server-sent events reaches the client as the gateway writes it, not
// when it ends. The gateway writes its second part only after the client has read the
// first, so a proxy that buffers the stream (or its headers) never delivers the first part.
func TestStreamedResponsesFlowAtOnce(t *testing.T) {
	f := newFixture(t, registry.AuthToken)
	for i, path := range []string{"/stream", "/events"} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, f.srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "gwa.gw.localhost"
		req.Header.Set("Authorization", "Bearer "+f.user("user_owner"))
		lines := make(chan string, 4)
		go func() {
			defer close(lines)
			resp, err := f.srv.Client().Do(req)
			if err != nil {
				lines <- err.Error()
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				lines <- resp.Status
				return
			}
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if sc.Text() != "" {
					lines <- sc.Text()
				}
			}
		}()
		select {
		case got := <-lines:
			if got != "data: first" {
				t.Fatalf("%s: got %q first, want %q", path, got, "data: first")
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the first part of the stream did not arrive before the stream went on", path)
		}
		if i == 0 {
			close(f.up.released) // both requests may go on
		}
		if got := <-lines; got != "data: second" {
			t.Fatalf("%s: got %q second, want %q", path, got, "data: second")
		}
		for range lines { // the response ends
		}
	}
}
