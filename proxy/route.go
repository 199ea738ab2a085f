package proxy

import (
	"errors"
	"net"
	"net/url"
	"path"
	"strings"
)

// errBadPath is a request path that could be read two ways (by moltgate and by the gateway)
// and so is refused rather than normalised.
var errBadPath = errors.New("proxy: ambiguous or malformed path")

// gatewayID returns the gateway named by host, "<id>.<domain>", or "" if host names none.
// The port and one trailing dot are ignored; the id must be a single DNS label, so
// "a.b.<domain>" names no gateway rather than gateway "a" or "a.b".
func gatewayID(host, domain string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	id, ok := strings.CutSuffix(host, "."+domain)
	if !ok || id == "" || len(id) > 63 || id[0] == '-' || id[len(id)-1] == '-' {
		return ""
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return ""
		}
	}
	return id
}

// normalizePath returns the one path both the policy and the gateway see: decoded, dot
// segments resolved, duplicate slashes folded. Encoded slashes and backslashes, NUL and other
// control characters are refused: gateways and their frameworks disagree on them, and a
// disagreement is how a path the policy denied reaches the gateway under another name. So is
// a percent sign left after decoding (a second layer of encoding, "%2572"): the gateway
// matches plugin routes after decoding a path up to 32 times, so /api/v1/admin/%2572pc is its
// /api/v1/admin/rpc.
func normalizePath(u *url.URL) (string, error) {
	raw := u.EscapedPath()
	if raw == "" {
		return "/", nil
	}
	if raw[0] != '/' {
		return "", errBadPath
	}
	lower := strings.ToLower(raw)
	if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") {
		return "", errBadPath
	}
	p, err := url.PathUnescape(raw)
	if err != nil {
		return "", errBadPath
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f || c == '\\' || c == '%' {
			return "", errBadPath
		}
	}
	clean := path.Clean(p)
	if strings.HasSuffix(p, "/") && clean != "/" {
		clean += "/" // keep a trailing slash: "/dir/" and "/dir" may differ upstream
	}
	return clean, nil
}

// escapePath encodes a normalised path for the request line.
func escapePath(p string) string {
	return (&url.URL{Path: p}).EscapedPath()
}
