package testenv

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
	"time"
)

// TapBodyLimit is the largest request body a [TapServer] records.
const TapBodyLimit = 64 << 10

// Recorded is one request as it reached a [TapServer].
type Recorded struct {
	Method   string
	Path     string // URL path, decoded
	RawPath  string // URL path as sent, when it differs from the decoded form
	RawQuery string
	Host     string      // Host header
	Header   http.Header // a clone, hop-by-hop headers included; do not modify
	// Body is the request body when it is at most TapBodyLimit bytes;
	// BodyTooLarge reports a longer one, which is forwarded but not kept.
	Body         []byte
	BodyTooLarge bool
	// Upgrade is the Upgrade header (for example "websocket").
	Upgrade string
	// Status is the upstream's response status once headers arrived (101 for
	// a WebSocket); 0 before that or when the upstream could not be reached.
	Status int
	Time   time.Time
}

// TapServer is a loopback reverse proxy that forwards every request to its
// upstream unchanged and records it. It adds no X-Forwarded-* header and
// keeps the inbound Host, so the upstream sees what the tap's client sent
// (less hop-by-hop headers), from the tap's loopback address.
type TapServer struct {
	// URL is the tap's base URL, http://127.0.0.1:port.
	URL string
	// Upstream is where requests go.
	Upstream *url.URL

	t         testing.TB
	server    *httptest.Server
	transport *http.Transport

	mu      sync.Mutex
	reqs    []*Recorded   // guarded by mu, like the records they point to
	changed chan struct{} // closed and replaced on every change
}

type tapRecordKey struct{}

// Tap starts a recording proxy in front of upstream (a base URL such as
// OpenClawGateway.URL) and closes it when the test ends.
func Tap(t testing.TB, upstream string) *TapServer {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil || u.Scheme == "" || u.Host == "" {
		t.Fatalf("testenv: tap upstream %q is not a base URL: %v", upstream, err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Otherwise the transport adds an Accept-Encoding: gzip the client
	// never sent.
	tr.DisableCompression = true
	tp := &TapServer{
		Upstream:  u,
		t:         t,
		transport: tr,
		changed:   make(chan struct{}),
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host
			// Rewrite mode strips these before calling us; the tap must
			// forward them as the client sent them.
			for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
				if v, ok := pr.In.Header[h]; ok {
					pr.Out.Header[h] = v
				}
			}
			// ...and drops query parameters it cannot parse.
			pr.Out.URL.RawQuery = pr.In.URL.RawQuery
		},
		Transport:     tp.transport,
		FlushInterval: -1, // stream SSE and chunked answers as they come
		ModifyResponse: func(resp *http.Response) error {
			if rec, ok := resp.Request.Context().Value(tapRecordKey{}).(*Recorded); ok {
				tp.mu.Lock()
				rec.Status = resp.StatusCode
				tp.notifyLocked()
				tp.mu.Unlock()
			}
			return nil
		},
	}
	tp.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := tp.record(r)
		proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tapRecordKey{}, rec)))
	}))
	tp.URL = tp.server.URL
	t.Cleanup(tp.Close)
	return tp
}

// record appends r and replaces its body with one that replays what was read.
func (tp *TapServer) record(r *http.Request) *Recorded {
	rec := &Recorded{
		Method:   r.Method,
		Path:     r.URL.Path,
		RawPath:  r.URL.RawPath,
		RawQuery: r.URL.RawQuery,
		Host:     r.Host,
		Header:   r.Header.Clone(),
		Upgrade:  r.Header.Get("Upgrade"),
		Time:     time.Now(),
	}
	if r.Body != nil && r.Body != http.NoBody {
		buf, err := io.ReadAll(io.LimitReader(r.Body, TapBodyLimit+1))
		if len(buf) > TapBodyLimit {
			rec.BodyTooLarge = true
		} else if err == nil {
			rec.Body = buf
		}
		// Replay the bytes already read, then the rest (and any read
		// error) from the original body.
		r.Body = readCloser{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
	}
	tp.mu.Lock()
	defer tp.mu.Unlock()
	tp.reqs = append(tp.reqs, rec)
	tp.notifyLocked()
	return rec
}

type readCloser struct {
	io.Reader
	io.Closer
}

func (tp *TapServer) notifyLocked() {
	close(tp.changed)
	tp.changed = make(chan struct{})
}

// Requests returns the recorded requests, oldest first.
func (tp *TapServer) Requests() []Recorded {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.snapshotLocked()
}

// Last returns the most recent request, failing the test when there is none
// (so an assertion on it cannot pass vacuously).
func (tp *TapServer) Last() Recorded {
	tp.t.Helper()
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if len(tp.reqs) == 0 {
		tp.t.Fatalf("testenv: tap %s recorded no request", tp.URL)
	}
	return *tp.reqs[len(tp.reqs)-1]
}

func (tp *TapServer) snapshotLocked() []Recorded {
	out := make([]Recorded, len(tp.reqs))
	for i, r := range tp.reqs {
		out[i] = *r
	}
	return out
}

// Reset forgets the recorded requests.
func (tp *TapServer) Reset() {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	tp.reqs = nil
	tp.notifyLocked()
}

// WaitFor returns the first recorded request, past or future, for which match
// is true, waiting up to timeout. ok is false on timeout. match may see the
// same request twice (its Status is filled in later).
func (tp *TapServer) WaitFor(match func(Recorded) bool, timeout time.Duration) (rec Recorded, ok bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		tp.mu.Lock()
		reqs := tp.snapshotLocked()
		changed := tp.changed
		tp.mu.Unlock()
		for _, r := range reqs {
			if match(r) {
				return r, true
			}
		}
		select {
		case <-changed:
		case <-timer.C:
			return Recorded{}, false
		}
	}
}

// Close stops the tap and closes its idle upstream connections; the test's
// cleanup calls it. WebSockets still open through the tap end when either
// side closes them.
func (tp *TapServer) Close() {
	tp.server.Close()
	tp.transport.CloseIdleConnections()
}
