package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"

	"github.com/moltgate/moltgate/proxy/browser"
	"github.com/moltgate/moltgate/registry"
)

// TransportConfig tunes the Transport to gateways. Zero values are the documented defaults.
type TransportConfig struct {
	// DialTimeout bounds connecting to a gateway. Default 5s.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for response headers. Default 60s.
	ResponseHeaderTimeout time.Duration
	// MaxIdleConnsPerHost keeps this many idle connections to each gateway. Default 256
	// (Go's default of 2 halves proxy throughput under load).
	MaxIdleConnsPerHost int
	// IdleConnTimeout closes idle connections after this long. Default 90s.
	IdleConnTimeout time.Duration
}

// NewTransport returns the one shared Transport to gateways.
func NewTransport(cfg TransportConfig) *http.Transport {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.ResponseHeaderTimeout <= 0 {
		cfg.ResponseHeaderTimeout = 60 * time.Second
	}
	if cfg.MaxIdleConnsPerHost <= 0 {
		cfg.MaxIdleConnsPerHost = 256
	}
	if cfg.IdleConnTimeout <= 0 {
		cfg.IdleConnTimeout = 90 * time.Second
	}
	return &http.Transport{
		Proxy:                 nil, // never route tenant traffic through an environment proxy
		DialContext:           (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          4 * cfg.MaxIdleConnsPerHost,
		MaxIdleConnsPerHost:   cfg.MaxIdleConnsPerHost,
		IdleConnTimeout:       cfg.IdleConnTimeout,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		TLSHandshakeTimeout:   cfg.DialTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true, // pass bodies through as the gateway sent them
	}
}

// spoofable are request headers a client could send to pose as moltgate or as a trusted
// proxy in front of the gateway; Rewrite has already removed Forwarded and X-Forwarded-For,
// -Host and -Proto. A trusted-proxy gateway reads the user from the one header its
// gateway.auth.trustedProxy.userHeader names; moltgate sends X-Forwarded-User, and also
// removes the identity headers of other proxies (the gateway's own documentation suggests
// x-remote-user and x-pomerium-claim-email), so a gateway configured with one of them gets
// no user at all rather than one the client chose.
var spoofable = []string{
	"Authorization", "Proxy-Authorization",
	"X-Real-Ip", "Cf-Connecting-Ip", "True-Client-Ip", "X-Client-Ip",
	"X-Forwarded-User", "X-Forwarded-Email", "X-Forwarded-Groups", "X-Forwarded-Port", "X-Forwarded-Prefix",
	"X-Openclaw-Scopes", "X-Request-Id",
	"Remote-User", "X-Remote-User", "X-Remote-Email", "X-Remote-Groups", "X-User", "X-Email",
}

// spoofablePrefixes start the names of further headers removed for the same reason:
// moltgate's own, and the identity headers of well-known authenticating proxies (Cloudflare
// Access, oauth2-proxy, Pomerium, Google IAP, AWS ALB, Azure App Service).
var spoofablePrefixes = []string{
	"X-Forwarded-", "X-Openclaw-", "Cf-Access-", "X-Auth-Request-", "X-Pomerium-",
	"X-Goog-Authenticated-", "X-Goog-Iap-", "X-Amzn-Oidc-", "X-Ms-Client-Principal",
}

// rewrite builds the upstream request: the normalised path, the client's credentials and
// forwarding headers removed, the gateway's own credentials added.
func (h *Handler) rewrite(pr *httputil.ProxyRequest) {
	rq := pr.In.Context().Value(requestKey{}).(*request)
	pr.Out.URL.Path, pr.Out.URL.RawPath = rq.path, ""
	pr.SetURL(rq.entry.UpstreamURL)
	hdr := pr.Out.Header
	for _, k := range spoofable {
		hdr.Del(k)
	}
	for k := range hdr {
		for _, p := range spoofablePrefixes {
			if strings.HasPrefix(k, p) {
				delete(hdr, k)
				break
			}
		}
	}
	stripSessionCookies(hdr)
	hdr.Set("X-Request-Id", rq.id)
	switch rq.entry.AuthMode {
	case registry.AuthTrustedProxy:
		hdr.Set("X-Forwarded-User", rq.subject.ID)
		proto := "http"
		if rq.https {
			proto = "https"
		}
		hdr.Set("X-Forwarded-Proto", proto)
		// The gateway refuses a trusted-proxy request that names no client
		// (proxy_attribution_required); this is the address moltgate decided on.
		if rq.client != "" {
			hdr.Set("X-Forwarded-For", rq.client)
		}
		// Scopes capped by the caller's role; without any the gateway grants read only.
		scopes := rq.scopes
		if len(scopes) == 0 {
			scopes = []string{"operator.read"}
		}
		hdr.Set("X-Openclaw-Scopes", strings.Join(scopes, ","))
	default:
		hdr.Set("Authorization", "Bearer "+string(rq.entry.Token))
	}
}

// stripSessionCookies removes Clerk's cookies and moltgate's session cookie, so a session that authenticated to moltgate
// cannot be replayed by (or leak into the logs of) a gateway. Other cookies pass; a Cookie
// header that does not parse is dropped whole.
func stripSessionCookies(hdr http.Header) {
	lines := hdr.Values("Cookie")
	if len(lines) == 0 {
		return
	}
	kept := make([]string, 0, 4)
	for _, line := range lines {
		cookies, err := http.ParseCookie(line)
		if err != nil {
			continue
		}
		for _, c := range cookies {
			if !isSessionCookie(c.Name) {
				kept = append(kept, c.Name+"="+c.Value)
			}
		}
	}
	hdr.Del("Cookie")
	if len(kept) > 0 {
		hdr.Set("Cookie", strings.Join(kept, "; "))
	}
}

func isSessionCookie(name string) bool {
	if browser.IsCookie(name) {
		return true
	}
	for _, p := range []string{"__session", "__client", "__clerk", "__refresh"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// filterSetCookies drops what a gateway may not set in a browser: moltgate's own session
// cookie (session fixation), and any cookie with a Domain attribute, which every other
// tenant's gateway host under the same domain would receive. A line that does not parse is
// dropped too.
func filterSetCookies(resp *http.Response) error {
	// A gateway must not name moltgate's decision: support would chase the wrong one.
	resp.Header.Del(DecisionIDHeader)
	lines := resp.Header.Values("Set-Cookie")
	if len(lines) == 0 {
		return nil
	}
	kept := lines[:0:0]
	for _, line := range lines {
		c, err := http.ParseSetCookie(line)
		if err != nil || c.Domain != "" || browser.IsCookie(c.Name) {
			continue
		}
		kept = append(kept, line)
	}
	resp.Header["Set-Cookie"] = kept
	if len(kept) == 0 {
		resp.Header.Del("Set-Cookie")
	}
	return nil
}

// upstreamError answers a failed round trip: 502 with no internals, or nothing when the
// client is already gone.
func (h *Handler) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	rq, _ := r.Context().Value(requestKey{}).(*request)
	kind := "unavailable"
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled) || r.Context().Err() != nil:
		h.m.upstreamErrs.WithLabelValues("canceled").Inc()
		return // status stays unset: counted as 499
	case errors.As(err, &ne) && ne.Timeout():
		kind = "timeout"
	}
	h.m.upstreamErrs.WithLabelValues(kind).Inc()
	attrs := []slog.Attr{slog.String("kind", kind), slog.Any("err", err)}
	if rq != nil {
		attrs = append(attrs, slog.String("request_id", rq.id), slog.String("gateway", rq.entry.ID))
	}
	h.deps.Logger.LogAttrs(r.Context(), slog.LevelWarn, "upstream round trip failed", attrs...)
	Refuse(w, http.StatusBadGateway, "upstream_"+kind)
}

// bufferPool lends 32 KiB copy buffers to the ReverseProxy.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(x []byte) { b.p.Put(&x) }
