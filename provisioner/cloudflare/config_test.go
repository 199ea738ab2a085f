package cloudflare_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner/cftest"
	"github.com/moltgate/moltgate/provisioner/cloudflare"
)

// Issue 14: New reports every config problem at once, naming the key.
func TestNewReportsEveryConfigProblem(t *testing.T) {
	t.Parallel()
	_, err := cloudflare.New(cloudflare.Config{BaseURL: "ftp://x", GatewayDomain: "no_domain", Attempts: -1}, nil)
	if err == nil {
		t.Fatal("got nil, want config errors")
	}
	for _, key := range []string{"account_id", "zone_id", "gateway_domain", "api_token", "base_url", "attempts"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error %q: want it to name %s", err, key)
		}
	}
}

// Issue 14: an ingress reaches the gateway on loopback and nothing else; its hostname is
// the gateway's. Refused before any request.
func TestConfigureIngressRefusesOtherServicesAndHostnames(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	for _, c := range []struct{ host, svc string }{
		{"", "http://10.0.0.5:18789"},
		{"", "https://127.0.0.1:18789"},
		{"", "http://127.0.0.1"},
		{"", "http://127.0.0.1:18789/admin"},
		{"", "http://user@127.0.0.1:18789"},
		{"", "tcp://127.0.0.1:22"},
		{"", "http://169.254.169.254:80"},
		{"other." + testDomain, service},
	} {
		if err := e.d.ConfigureIngress(t.Context(), "acme-9", c.host, c.svc); !errors.Is(err, cloudflare.ErrInvalidIngress) {
			t.Errorf("%q → %q: got %v, want ErrInvalidIngress", c.host, c.svc, err)
		}
	}
	if got := e.fake.TotalCalls(); got != 0 {
		t.Fatalf("requests: got %d, want 0", got)
	}
	for _, ok := range []string{"http://127.0.0.1:18789", "http://[::1]:8080", "http://localhost:18789"} {
		if err := e.d.ConfigureIngress(t.Context(), "acme-9", "", ok); !errors.Is(err, cloudflare.ErrNotFound) {
			t.Errorf("%q: got %v, want it accepted (then ErrNotFound: no tunnel yet)", ok, err)
		}
	}
}

// Issue 14: invalid gateway ids are refused before any request.
func TestInvalidGatewayID(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	for _, id := range []string{"", "Acme", "-a", "a.b", "a_b", strings.Repeat("a", 64)} {
		if _, err := e.d.EnsureTunnel(t.Context(), id); !errors.Is(err, cloudflare.ErrInvalidID) {
			t.Errorf("%q: got %v, want ErrInvalidID", id, err)
		}
	}
	if got := e.fake.TotalCalls(); got != 0 {
		t.Fatalf("requests: got %d, want 0", got)
	}
}

// Issue 14: CLOUDFLARE_* environment variables are never read: with a wrong token, key,
// e-mail, base URL and extra headers in the environment, the driver still works with its
// config alone (the fake refuses any other token).
func TestEnvironmentIsIgnored(t *testing.T) {
	for k, v := range map[string]string{
		"CLOUDFLARE_API_TOKEN": "wrong", "CLOUDFLARE_API_KEY": "wrong-key", "CLOUDFLARE_EMAIL": "x@example.test",
		"CLOUDFLARE_BASE_URL": "http://127.0.0.1:1/client/v4/", "CLOUDFLARE_CUSTOM_HEADERS": "Authorization: Bearer wrong",
		"CLOUDFLARE_API_USER_SERVICE_KEY": "wrong",
	} {
		t.Setenv(k, v)
	}
	e := newEnv(t, nil)
	if _, err := e.ensureAll(t, t.Context(), "acme-10"); err != nil {
		t.Fatal(err)
	}
	assertOneOfEach(t, e, "acme-10")
}

// Issue 14: a token the API refuses is ErrUnauthorized.
func TestRefusedTokenIsUnauthorized(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *cloudflare.Config) { c.APIToken = keystore.Secret("not-the-token") })
	if _, err := e.d.EnsureTunnel(t.Context(), "acme-11"); !errors.Is(err, cloudflare.ErrUnauthorized) {
		t.Fatalf("got %v, want ErrUnauthorized", err)
	}
	if got := e.fake.Counts(); got != (cftest.Counts{}) {
		t.Fatalf("counts: got %+v, want nothing created", got)
	}
}
