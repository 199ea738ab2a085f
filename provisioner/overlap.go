package provisioner

import (
	"bytes"
	"crypto/subtle"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// overlap bridges a token rotation on the request path. A gateway accepts one token at a
// time and switches when its driver installs the new one; the registry switches when the
// "register" step runs after that. Between the two, and for requests that read the old
// registry entry just before it switched, a gateway answers 401 to the token moltgate sends.
// For the gateways whose rotation is in flight (and OverlapGrace after), Transport retries
// such a request once with the other token, so no request fails for the rotation.
type overlap struct {
	// pairs counts byHost's entries, so that the request path pays nothing but this load
	// while no rotation is in flight.
	pairs   atomic.Int64
	mu      sync.RWMutex
	byHost  map[string]*tokenPair // upstream host → the tokens of a rotation
	now     func() time.Time
	retries prometheus.Counter
}

// tokenPair is immutable once in byHost.
type tokenPair struct {
	id       string
	old, new string
	// until is when the pair is dropped; zero while the rotation is in flight.
	until time.Time
}

// maxReplayBody bounds the request body kept to send again with the other token (the
// proxy's default bound of a tool call body). A larger body is sent once.
const maxReplayBody = 1 << 20

// note updates the overlap of gateway st.spec.ID from its record: a pair while PrevToken is
// set, dropped OverlapGrace after it is cleared.
func (o *overlap) note(p *Provisioner, st *pass) {
	host := upstreamHost(st.rec.Upstream)
	if st.rec.PrevToken == nil || st.rec.Token == nil || host == "" {
		o.mu.Lock()
		for h, pair := range o.byHost {
			if pair.id == st.spec.ID && pair.until.IsZero() {
				ended := *pair // pairs are never changed in place: lookup reads them unlocked
				ended.until = o.now().Add(p.cfg.OverlapGrace)
				o.byHost[h] = &ended
			}
		}
		o.mu.Unlock()
		return
	}
	oldTok, err := p.openToken(st.spec.ID, st.rec.Tenant, st.rec.PrevToken)
	if err != nil {
		return
	}
	newTok, err := p.openToken(st.spec.ID, st.rec.Tenant, st.rec.Token)
	if err != nil {
		return
	}
	o.mu.Lock()
	o.byHost[host] = &tokenPair{id: st.spec.ID, old: string(oldTok), new: string(newTok)}
	o.pairs.Store(int64(len(o.byHost)))
	o.mu.Unlock()
}

// forget drops gateway id's pairs (it is destroyed).
func (o *overlap) forget(id string) {
	o.mu.Lock()
	for h, pair := range o.byHost {
		if pair.id == id {
			delete(o.byHost, h)
		}
	}
	o.pairs.Store(int64(len(o.byHost)))
	o.mu.Unlock()
}

// lookup returns the token to send instead, if a request to host carrying auth (its
// Authorization) is one of a rotation's.
func (o *overlap) lookup(host, auth string) (other string, ok bool) {
	o.mu.RLock()
	pair := o.byHost[host]
	o.mu.RUnlock()
	if pair == nil {
		return "", false
	}
	if !pair.until.IsZero() && o.now().After(pair.until) {
		o.mu.Lock()
		if o.byHost[host] == pair {
			delete(o.byHost, host)
		}
		o.pairs.Store(int64(len(o.byHost)))
		o.mu.Unlock()
		return "", false
	}
	switch {
	case subtle.ConstantTimeCompare([]byte(auth), []byte("Bearer "+pair.old)) == 1:
		return pair.new, true
	case subtle.ConstantTimeCompare([]byte(auth), []byte("Bearer "+pair.new)) == 1:
		return pair.old, true
	}
	return "", false
}

// Transport wraps next, the proxy's transport to gateways, with the token overlap of
// rotations in flight: a request to such a gateway answered 401 is sent once more with the
// gateway's other token (its body replayed, up to 1 MiB). Every other request passes
// through untouched.
func (p *Provisioner) Transport(next http.RoundTripper) http.RoundTripper {
	return &overlapTransport{o: p.ovl, next: next}
}

type overlapTransport struct {
	o    *overlap
	next http.RoundTripper
}

func (t *overlapTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.o.pairs.Load() == 0 { // no rotation in flight: the request path's case
		return t.next.RoundTrip(req)
	}
	other, ok := t.o.lookup(req.URL.Host, req.Header.Get("Authorization"))
	if !ok {
		return t.next.RoundTrip(req)
	}
	var body []byte
	replay := true
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(io.LimitReader(req.Body, maxReplayBody+1))
		if err != nil {
			req.Body.Close()
			return nil, err
		}
		orig := req.Body
		req = req.Clone(req.Context())
		if len(b) > maxReplayBody {
			replay = false
			req.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(b), orig), orig}
		} else {
			orig.Close()
			body = b
			req.Body = io.NopCloser(bytes.NewReader(body))
		}
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || !replay {
		return resp, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	again := req.Clone(req.Context())
	again.Header.Set("Authorization", "Bearer "+other)
	if body != nil {
		again.Body = io.NopCloser(bytes.NewReader(body))
	}
	t.o.retries.Inc()
	return t.next.RoundTrip(again)
}

func upstreamHost(u string) string {
	if u == "" {
		return ""
	}
	pu, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return pu.Host
}
