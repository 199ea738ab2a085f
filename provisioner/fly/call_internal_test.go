package fly

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/moltgate/moltgate/keystore"
)

// The driver's transport sends flaps' requests to BaseURL, path prefix included, whatever
// host flaps built them for (FLY_FLAPS_BASE_URL or its default).
func TestTransportRewritesToBaseURL(t *testing.T) {
	t.Parallel()
	seen := make(chan string, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Method + " " + r.URL.Path + "?" + r.URL.RawQuery
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer srv.Close()
	base, _ := url.Parse(srv.URL + "/machines-api/")
	tr := &transport{base: base, next: http.DefaultTransport}
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		req, _ := http.NewRequest(method, "https://api.machines.dev/v1/apps/mg-a/ip_assignments/2a09:8280:1::5?x=1", nil)
		resp, err := tr.RoundTrip(req)
		var unknown *unknownResultError
		switch method {
		case http.MethodGet:
			if err != nil || resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("GET: got %v, %v; want the 502 passed on (the SDK may repeat a read)", resp, err)
			}
			resp.Body.Close()
		case http.MethodPost:
			if !errors.As(err, &unknown) || unknown.status != http.StatusBadGateway {
				t.Fatalf("POST: got %v, %v; want an unknown result, not a response the SDK would repeat", resp, err)
			}
			if _, temporary := error(unknown).(interface{ Temporary() bool }); temporary {
				t.Fatal("unknownResultError has a Temporary method: rehttp would repeat the create")
			}
		}
	}
	want := "/machines-api/v1/apps/mg-a/ip_assignments/2a09:8280:1::5?x=1"
	got := []string{<-seen, <-seen}
	if got[0] != "GET "+want || got[1] != "POST "+want {
		t.Fatalf("requests: got %q, want GET and POST %s", got, want)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ok := func() Config { return Config{Org: "o", Region: "ams", Token: keystore.Secret("t")} }
	rows := []struct {
		name string
		mod  func(*Config)
		want []string // substrings of the error; none: valid
	}{
		{"defaults", func(*Config) {}, nil},
		{"empty", func(c *Config) { *c = Config{} }, []string{"org: empty", "region: empty", "token: empty"}},
		{"base url", func(c *Config) { c.BaseURL = "ftp://x" }, []string{"base_url:"}},
		{"prefix", func(c *Config) { c.AppPrefix = "MG_" }, []string{"app_prefix:"}},
		{"env overrides the bind", func(c *Config) { c.Env = map[string]string{EnvBind: "lan", "OK": "1"} }, []string{"env[OPENCLAW_GATEWAY_BIND]"}},
		{"env name", func(c *Config) { c.Env = map[string]string{"A-B": "1"} }, []string{"env[A-B]"}},
		{"port", func(c *Config) { c.GatewayPort = 70000 }, []string{"gateway_port:"}},
		{"mount", func(c *Config) { c.MountPath = "data" }, []string{"mount_path:"}},
		{"lease", func(c *Config) { c.LeaseTTL = time.Millisecond }, []string{"lease_ttl:"}},
		{"negative", func(c *Config) { c.LeaseWait = -time.Second }, []string{"lease_wait: negative"}},
	}
	for _, r := range rows {
		c := ok()
		r.mod(&c)
		err := c.validate()
		if (err == nil) != (len(r.want) == 0) {
			t.Errorf("%s: got %v, want errors %q", r.name, err, r.want)
			continue
		}
		for _, w := range r.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: got %v, want it to name %q", r.name, err, w)
			}
		}
	}
}

// Issue 14: the token never prints, whatever prints the config.
func TestConfigDoesNotPrintTheToken(t *testing.T) {
	t.Parallel()
	c := Config{Org: "o", Region: "ams", Token: keystore.Secret("fo1_VERYSECRET")}
	for _, s := range []string{fmt.Sprintf("%v", c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c)} {
		if strings.Contains(s, "VERYSECRET") {
			t.Fatalf("config prints its token: %s", s)
		}
	}
}
