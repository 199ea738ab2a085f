package browser

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Cookie names. Over HTTPS the __Host- prefix makes the browser refuse the cookie unless it
// is Secure, host-only and for path /: a sibling host (another tenant's gateway) can neither
// set nor overwrite it. Over plain HTTP (loopback development) no prefix is possible; the
// cookie is still host-only.
const (
	CookieHTTPS = "__Host-moltgate"
	CookieHTTP  = "moltgate"
)

// PathPrefix is moltgate's own part of every gateway host; requests under it never reach the
// gateway: launch (GET /.moltgate/launch?code=…) and sign-out (POST /.moltgate/signout).
const PathPrefix = "/.moltgate/"

// CookieName is the session cookie's name on a host reached over https or not.
func CookieName(https bool) string {
	if https {
		return CookieHTTPS
	}
	return CookieHTTP
}

// IsCookie reports whether name is one of moltgate's session cookies, whatever the scheme:
// never forwarded to a gateway, never set by one.
func IsCookie(name string) bool { return name == CookieHTTPS || name == CookieHTTP }

// ErrAmbiguous is a request with several session cookies of the name in use.
var ErrAmbiguous = errors.New("browser: more than one session cookie")

// Token returns the session cookie's value, if the request has one. Only the name of the
// request's scheme counts: over HTTPS, a cookie without the prefix may have been set by
// someone else.
func Token(r *http.Request, https bool) (string, bool, error) {
	cs := r.CookiesNamed(CookieName(https))
	switch {
	case len(cs) == 0 || len(cs) == 1 && cs[0].Value == "":
		return "", false, nil
	case len(cs) > 1:
		return "", false, ErrAmbiguous
	}
	return cs[0].Value, true, nil
}

// SetCookie gives the browser session tok until expires.
func SetCookie(w http.ResponseWriter, tok string, https bool, expires time.Time) {
	http.SetCookie(w, &http.Cookie{Name: CookieName(https), Value: tok, Path: "/", Expires: expires,
		Secure: https, HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

// ClearCookie removes the session cookie.
func ClearCookie(w http.ResponseWriter, https bool) {
	http.SetCookie(w, &http.Cookie{Name: CookieName(https), Value: "", Path: "/", MaxAge: -1,
		Secure: https, HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

// maxReturn bounds a return path.
const maxReturn = 2048

// SafeReturn returns p if it is a path on the same host: it starts with one "/", names no
// scheme or host, holds no backslash or control character, and does not lead back into
// PathPrefix. Anything else becomes "/": no open redirect through a launch or a sign-in.
func SafeReturn(p string) string {
	if p == "" || len(p) > maxReturn || p[0] != '/' || strings.HasPrefix(p, "//") ||
		strings.ContainsFunc(p, func(r rune) bool { return r == '\\' || r < 0x20 || r == 0x7f }) {
		return "/"
	}
	u, err := url.Parse(p)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" ||
		!strings.HasPrefix(u.Path, "/") || strings.HasPrefix(u.Path, "//") {
		return "/"
	}
	if strings.HasPrefix(strings.ToLower(u.Path), PathPrefix) {
		return "/"
	}
	u.Fragment = ""
	return u.RequestURI()
}

// IsNavigation reports whether r is a browser loading a page (not a fetch, an asset or a
// socket): those are sent to sign in, the others keep their 401.
func IsNavigation(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	if mode := r.Header.Get("Sec-Fetch-Mode"); mode != "" {
		return mode == "navigate"
	}
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

// SameOrigin reports whether a cookie-authenticated change comes from the host's own pages:
// Sec-Fetch-Site says same-origin, or Origin is this host's origin. A browser always sends
// one of them on a cross-site request, which is refused (CSRF); a request with neither is too.
func SameOrigin(r *http.Request, https bool) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "same-origin":
		return true
	case "":
	default:
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return false
	}
	scheme := "http"
	if https {
		scheme = "https"
	}
	return strings.EqualFold(o, scheme+"://"+r.Host)
}

// SignInURL is where a navigation without identity is sent: base with the gateway id and
// the path to come back to.
func SignInURL(base *url.URL, gateway, returnPath string) string {
	u := *base
	q := u.Query()
	q.Set("gateway", gateway)
	q.Set("return_path", SafeReturn(returnPath))
	u.RawQuery = q.Encode()
	return u.String()
}
