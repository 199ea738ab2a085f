package cftest_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/cloudflare/cloudflare-go/v7/dns"
	"github.com/cloudflare/cloudflare-go/v7/option"
	"github.com/cloudflare/cloudflare-go/v7/zero_trust"

	"github.com/moltgate/moltgate/provisioner/cftest"
)

const token = "cftest-token"

// newFake starts a fake with 3-item pages and returns the real SDK services pointed at it.
func newFake(t *testing.T) (*cftest.Server, *zero_trust.TunnelCloudflaredService, *dns.RecordService, *zero_trust.AccessServiceTokenService) {
	t.Helper()
	f, err := cftest.New(cftest.Config{Token: token, MaxPerPage: 3, DefaultPerPage: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	opts := []option.RequestOption{option.WithHTTPClient(&http.Client{}), option.WithBaseURL(f.BaseURL()),
		option.WithAPIToken(token), option.WithMaxRetries(0)}
	return f, zero_trust.NewTunnelCloudflaredService(opts...), dns.NewRecordService(opts...), zero_trust.NewAccessServiceTokenService(opts...)
}

func apiCode(t *testing.T, err error) (int, int64) {
	t.Helper()
	var ae *zero_trust.Error
	if !errors.As(err, &ae) || len(ae.Errors) == 0 {
		t.Fatalf("got %v, want an API error with codes", err)
	}
	return ae.StatusCode, ae.Errors[0].Code
}

func newTunnel(t *testing.T, c *zero_trust.TunnelCloudflaredService, name string) (string, error) {
	t.Helper()
	p := zero_trust.TunnelCloudflaredNewParams{}
	p.AccountID.Value, p.AccountID.Present = "acc-test", true
	p.Name.Value, p.Name.Present = name, true
	p.ConfigSrc.Value, p.ConfigSrc.Present = zero_trust.TunnelCloudflaredNewParamsConfigSrcCloudflare, true
	res, err := c.New(t.Context(), p)
	if err != nil {
		return "", err
	}
	return res.ID, nil
}

// Issue 14: tunnel names are unique among live tunnels (409, code 1013); a deleted tunnel
// stays listed with deleted_at unless is_deleted=false, and its name is free again.
func TestTunnelNamesAndDeletion(t *testing.T) {
	t.Parallel()
	f, c, _, _ := newFake(t)
	id, err := newTunnel(t, c, "mg-a")
	if err != nil {
		t.Fatal(err)
	}
	_, err = newTunnel(t, c, "mg-a")
	if status, code := apiCode(t, err); status != 409 || code != cftest.CodeTunnelNameTaken {
		t.Fatalf("second create: got %d/%d, want 409/1013", status, code)
	}
	d := zero_trust.TunnelCloudflaredDeleteParams{}
	d.AccountID.Value, d.AccountID.Present = "acc-test", true
	if _, err := c.Delete(t.Context(), id, d); err != nil {
		t.Fatal(err)
	}
	if _, err := newTunnel(t, c, "mg-a"); err != nil {
		t.Fatalf("create after delete: %v", err)
	}
	list := func(live bool) int {
		p := zero_trust.TunnelCloudflaredListParams{}
		p.AccountID.Value, p.AccountID.Present = "acc-test", true
		if live {
			p.IsDeleted.Value, p.IsDeleted.Present = false, true
		}
		n := 0
		for it := c.ListAutoPaging(t.Context(), p); it.Next(); {
			n++
		}
		return n
	}
	if all, live := list(false), list(true); all != 2 || live != 1 {
		t.Fatalf("listed: got %d in all and %d live, want 2 and 1", all, live)
	}
	if got := f.Counts().Tunnels; got != 1 {
		t.Fatalf("live tunnels: got %d, want 1", got)
	}
}

// Issue 14: pages hold per_page items and the page past the end is empty, which is what
// stops the SDK's auto-pager: 7 tokens in pages of 3 take 4 requests.
func TestPaginationEndsWithEmptyPage(t *testing.T) {
	t.Parallel()
	f, _, _, st := newFake(t)
	for i := range 7 {
		p := zero_trust.AccessServiceTokenNewParams{}
		p.AccountID.Value, p.AccountID.Present = "acc-test", true
		p.Name.Value, p.Name.Present = "tok-"+strconv.Itoa(i), true
		res, err := st.New(t.Context(), p)
		if err != nil {
			t.Fatal(err)
		}
		if res.ClientSecret == "" {
			t.Fatal("create: no client secret")
		}
	}
	p := zero_trust.AccessServiceTokenListParams{}
	p.AccountID.Value, p.AccountID.Present = "acc-test", true
	n := 0
	it := st.ListAutoPaging(t.Context(), p)
	for it.Next() {
		n++
		if it.Current().ClientID == "" {
			t.Fatal("listed token without client id")
		}
	}
	if it.Err() != nil || n != 7 {
		t.Fatalf("listed %d (%v), want 7", n, it.Err())
	}
	if got := f.Calls(cftest.RouteListServiceTokens); got != 4 {
		t.Fatalf("list requests: got %d, want 4", got)
	}
}

// Issue 14: a CNAME stands alone on its name (81053) and an identical record is 81057.
func TestDNSConflicts(t *testing.T) {
	t.Parallel()
	_, _, r, _ := newFake(t)
	add := func(typ, content string) error {
		p := dns.RecordNewParams{}
		p.ZoneID.Value, p.ZoneID.Present = "zone-test", true
		var b dns.RecordNewParamsBody
		b.Name.Value, b.Name.Present = "a.example.test", true
		b.Type.Value, b.Type.Present = dns.RecordNewParamsBodyType(typ), true
		b.Content.Value, b.Content.Present = content, true
		b.TTL.Value, b.TTL.Present = 1, true
		p.Body = b
		_, err := r.New(t.Context(), p)
		return err
	}
	if err := add("CNAME", "x.cfargotunnel.com"); err != nil {
		t.Fatal(err)
	}
	if _, code := apiCode(t, add("CNAME", "x.cfargotunnel.com")); code != cftest.CodeRecordExists {
		t.Fatalf("identical: got code %d, want 81057", code)
	}
	if _, code := apiCode(t, add("A", "192.0.2.1")); code != cftest.CodeRecordConflict {
		t.Fatalf("A beside CNAME: got code %d, want 81053", code)
	}
}

// Issue 14: injected faults: 429 with Retry-After, a failure after the effect, a stall
// until the client gives up, and 1033.
func TestFaults(t *testing.T) {
	t.Parallel()
	f, c, _, _ := newFake(t)
	f.Inject(cftest.RouteCreateTunnel, cftest.Fault{Kind: cftest.RateLimit, RetryAfter: 1500 * time.Millisecond})
	_, err := newTunnel(t, c, "mg-b")
	var ae *zero_trust.Error
	if status, code := apiCode(t, err); status != 429 || code != 971 || !errors.As(err, &ae) || ae.Response.Header.Get("Retry-After") != "2" {
		t.Fatalf("rate limit: got %d/%d, want 429/971 with Retry-After 2", status, code)
	}
	f.Inject(cftest.RouteCreateTunnel, cftest.Fault{Kind: cftest.FailAfter})
	if status, _ := apiCode(t, func() error { _, err := newTunnel(t, c, "mg-b"); return err }()); status != 500 {
		t.Fatalf("fail after: got %d, want 500", status)
	}
	if got := f.Counts().Tunnels; got != 1 {
		t.Fatalf("fail after: got %d tunnels, want the one created", got)
	}
	f.Inject(cftest.RouteCreateTunnel, cftest.Fault{Kind: cftest.OtherTunnel})
	if _, code := apiCode(t, func() error { _, err := newTunnel(t, c, "mg-c"); return err }()); code != cftest.CodeHostnameOnTunnel {
		t.Fatalf("other tunnel: got code %d, want 1033", code)
	}
	f.Inject(cftest.RouteCreateTunnel, cftest.Fault{Kind: cftest.Stall})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	p := zero_trust.TunnelCloudflaredNewParams{}
	p.AccountID.Value, p.AccountID.Present = "acc-test", true
	p.Name.Value, p.Name.Present = "mg-d", true
	if _, err := c.New(ctx, p); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stall: got %v, want a deadline", err)
	}
	if got := f.Counts().Tunnels; got != 1 {
		t.Fatalf("after stall and 1033: got %d tunnels, want 1", got)
	}
}
