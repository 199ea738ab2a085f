package fly_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner/fly"
	"github.com/moltgate/moltgate/provisioner/flytest"
)

// Issue 14: secrets are never logged and never in an error. A failed secrets call keeps
// only its status: the API's message could quote what it was sent.
func TestSecretsNeverInErrorsOrLogs(t *testing.T) {
	t.Parallel()
	rows := []struct {
		name  string
		route flytest.Route
		fault flytest.Fault
	}{
		{"set refused", flytest.RouteUpdateSecrets, flytest.Fault{Kind: flytest.Fail, Status: 400, Times: -1}},
		{"set keeps failing", flytest.RouteUpdateSecrets, flytest.Fault{Kind: flytest.Fail, Times: -1}},
		{"set stalls", flytest.RouteUpdateSecrets, flytest.Fault{Kind: flytest.Stall, Times: -1}},
		{"set rate limited", flytest.RouteUpdateSecrets, flytest.Fault{Kind: flytest.RateLimit, RetryAfter: time.Hour}},
		{"list fails", flytest.RouteListSecrets, flytest.Fault{Kind: flytest.Fail, Status: 403, Times: -1}},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, flytest.Config{}, func(c *fly.Config) {
				c.RequestTimeout, c.Attempts = 300*time.Millisecond, 2
			})
			if _, err := e.d.EnsureApp(t.Context(), "acme-20"); err != nil {
				t.Fatal(err)
			}
			e.fake.Inject(r.route, r.fault)
			_, err := e.d.SetSecrets(t.Context(), "acme-20", tenantSecrets())
			if err == nil {
				t.Fatal("got success, want an error")
			}
			assertNoSecret(t, "error", err.Error())
			if strings.Contains(err.Error(), "injected") {
				t.Fatalf("error %q carries the API's message", err)
			}
			if r.fault.Kind == flytest.RateLimit && !errors.Is(err, fly.ErrRateLimited) {
				t.Fatalf("Retry-After beyond MaxRetryAfter: got %v, want ErrRateLimited", err)
			}
			var ae *fly.APIError
			if errors.As(err, &ae) && ae.Message != "" {
				t.Fatalf("APIError of a secrets call: got message %q, want none", ae.Message)
			}
		})
	}
	e := newEnv(t, flytest.Config{}, nil)
	if _, err := e.d.EnsureApp(t.Context(), "acme-20"); err != nil {
		t.Fatal(err)
	}
	bad := tenantSecrets()
	bad["NOT-A-NAME"] = keystore.Secret(providerKey)
	if _, err := e.d.SetSecrets(t.Context(), "acme-20", bad); err == nil || strings.Contains(err.Error(), providerKey) {
		t.Fatalf("invalid name: got %v, want an error without the value", err)
	}
	if got := e.fake.Calls(flytest.RouteUpdateSecrets); got != 0 {
		t.Fatalf("secrets calls: got %d, want 0", got)
	}
}
