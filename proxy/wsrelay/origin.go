package wsrelay

import (
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/moltgate/moltgate/registry"
)

// CanonicalOrigin returns origin in the one form browsers serialize it: scheme://host[:port]
// in lower case, without the scheme's default port, or "" when origin is not exactly an http
// or https origin (a path, query, fragment, user info, "null", or anything that does not
// parse). Origins are compared in this form only, so no spelling of an origin passes one check
// and fails another.
func CanonicalOrigin(origin string) string {
	i := strings.Index(origin, "://")
	if i <= 0 {
		return ""
	}
	scheme, host := strings.ToLower(origin[:i]), strings.ToLower(strings.TrimSuffix(origin[i+3:], "/"))
	if (scheme != "http" && scheme != "https") || host == "" || strings.ContainsAny(host, "/?#@\\ \t%") {
		return ""
	}
	u, err := url.Parse(scheme + "://" + host)
	if err != nil || u.Host != host || u.Hostname() == "" || u.User != nil {
		return ""
	}
	hostname, port := u.Hostname(), u.Port()
	if strings.Contains(host, ":") && port == "" && !strings.HasSuffix(host, "]") {
		return "" // "host:" with an empty port
	}
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = ""
	}
	if strings.Contains(hostname, ":") {
		hostname = "[" + hostname + "]"
	}
	if port != "" {
		return scheme + "://" + hostname + ":" + port
	}
	return scheme + "://" + hostname
}

// upstreamOrigin checks the Origin of upgrade r for socket s and returns the Origin moltgate
// sends the gateway in its place, "" for none. A page on another site must not ride a
// user's cookies into their gateway (cross-site WebSocket hijacking), so a browser socket is
// accepted only from the gateway's own public origin (s.PublicOrigin, the Control UI) or one
// of the configured dashboard origins; anything else, a second Origin header or one that is
// not a plain origin is refused. Requests without Origin (CLIs, SDKs) are not browsers and
// pass.
//
// The gateway is never sent the browser's value. A socket from the gateway's own origin gets
// the origin the gateway accepts for its own Control UI (gatewayOrigin); a dashboard's socket
// goes on without Origin, as a client the gateway does not treat as a browser, as it did
// before moltgate checked origins itself.
func (rl *Relay) upstreamOrigin(r *http.Request, s Session) (string, *Refusal) {
	values := r.Header.Values("Origin")
	switch {
	case len(values) == 0:
		return "", nil
	case len(values) > 1:
		return "", &Refusal{http.StatusForbidden, "origin_not_allowed"}
	}
	origin := CanonicalOrigin(values[0])
	switch {
	case origin == "":
		return "", &Refusal{http.StatusForbidden, "origin_not_allowed"}
	case origin == s.PublicOrigin:
		if up := gatewayOrigin(s); up != "" {
			return up, nil
		}
		return "", &Refusal{http.StatusForbidden, "origin_not_allowed"}
	case slices.Contains(rl.cfg.AllowedOrigins, origin):
		return "", nil
	}
	return "", &Refusal{http.StatusForbidden, "origin_not_allowed"}
}

// gatewayOrigin is the Origin the pinned gateway accepts for its own Control UI on a socket
// moltgate opens (checkBrowserOrigin in its dist/origin-check-*.mjs):
//   - token mode: the gateway's upstream origin, the scheme and host moltgate dials (and
//     sends as Host). The gateway takes it as same-origin: a loopback host when moltgate
//     reaches it as a local client (a loopback peer without forwarding headers, which token
//     mode needs anyway), or a private address. It also holds the page to the gateway's own
//     build (the Control UI's client.buildId), as it does for a page it served directly.
//   - trusted-proxy mode: the gateway's public origin, which the gateway must list in
//     gateway.controlUi.allowedOrigins (its same-origin and loopback rules do not apply to
//     a client behind a proxy).
//
// The value comes from moltgate's registry and configuration, or from the public origin the
// browser's own Origin has just been found equal to: never from the client unchecked.
func gatewayOrigin(s Session) string {
	if s.Entry.AuthMode == registry.AuthTrustedProxy {
		return s.PublicOrigin
	}
	u := s.Entry.UpstreamURL
	if u == nil {
		return ""
	}
	scheme := "http"
	if u.Scheme == "https" || u.Scheme == "wss" {
		scheme = "https"
	}
	return CanonicalOrigin(scheme + "://" + u.Host)
}

// PublicOrigin returns the origin under which a browser reaches gateway pages through
// request r: https://<Host> when r came over HTTPS (https, as the proxy established it),
// http://<Host> when it came over plain HTTP to a loopback listener (development:
// moltgate on 127.0.0.1, gateways at <id>.gw.localhost:<port>), else "": a page served
// over plain HTTP elsewhere could have been written by anyone on the path.
func PublicOrigin(r *http.Request, https bool) string {
	scheme := "https"
	if !https {
		if !loopbackListener(r) {
			return ""
		}
		scheme = "http"
	}
	return CanonicalOrigin(scheme + "://" + r.Host)
}

func loopbackListener(r *http.Request) bool {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
