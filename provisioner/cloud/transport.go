package cloud

import (
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/moltgate/moltgate/keystore"
)

// credentialsTTL is how long the service token read from the store is used before it is
// read again (another process may have replaced it).
const credentialsTTL = 30 * time.Second

type credentials struct {
	clientID string
	secret   keystore.Secret
	read     time.Time
}

// Transport returns next with moltgate's service token (CF-Access-Client-Id and
// CF-Access-Client-Secret) added to every request for a gateway hostname: the Access
// application in front of each tunnel admits nothing else. Requests for other hosts pass
// unchanged. Clients cannot supply these headers themselves: the proxy strips every
// incoming Cf-Access-* header before a request gets here.
func (d *Driver) Transport(next http.RoundTripper) http.RoundTripper {
	return &accessTransport{d: d, next: next, suffix: "." + d.deps.Cloudflare.GatewayDomain()}
}

type accessTransport struct {
	d      *Driver
	next   http.RoundTripper
	suffix string
	creds  atomic.Pointer[credentials]
}

func (t *accessTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !strings.HasSuffix(strings.ToLower(req.URL.Hostname()), t.suffix) {
		return t.next.RoundTrip(req)
	}
	c := t.creds.Load()
	if c == nil || time.Since(c.read) > credentialsTTL {
		id, secret, err := t.d.AccessCredentials()
		if err != nil {
			// Access refuses the request (403): what the proxy reports as an upstream failure.
			t.d.deps.Logger.LogAttrs(req.Context(), slog.LevelWarn, "cloud: no service token for a gateway request", slog.Any("err", err))
			return t.next.RoundTrip(req)
		}
		c = &credentials{clientID: id, secret: secret, read: time.Now()}
		t.creds.Store(c)
	}
	out := req.Clone(req.Context())
	out.Header.Set("CF-Access-Client-Id", c.clientID)
	out.Header.Set("CF-Access-Client-Secret", string(c.secret))
	return t.next.RoundTrip(out)
}
