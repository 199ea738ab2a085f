package registry

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/store"
)

// recordingSyncer is the policy engine's side of the contract, recorded.
type recordingSyncer struct {
	mu  sync.Mutex
	gws map[string]Gateway
	err error
}

func (s *recordingSyncer) PutGateway(_ context.Context, g Gateway) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	s.gws[g.ID] = g
	return nil
}

func (s *recordingSyncer) DeleteGateway(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.gws, id)
	return nil
}

const tok1 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
const tok2 = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"

func newTestRegistry(t *testing.T, path string) (*Registry, *recordingSyncer, *store.Bolt) {
	t.Helper()
	kv, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })
	r, s := newTestRegistryOn(t, kv)
	return r, s, kv
}

// newTestRegistryOn is a registry on kv: a second one on the same kv plays another
// replica sharing the store.
func newTestRegistryOn(t *testing.T, kv KV) (*Registry, *recordingSyncer) {
	t.Helper()
	ring, _ := keystore.NewKeyring(1, bytes.Repeat([]byte{5}, keystore.KeySize))
	s := &recordingSyncer{gws: map[string]Gateway{}}
	r, err := New(t.Context(), kv, keystore.New(ring), s, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r, s
}

func validGateway() Gateway {
	return Gateway{ID: "gw1", Tenant: "tenant-a", Owner: "user_owner", Upstream: "http://127.0.0.1:18789"}
}

func TestCreateLookupReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	r, s, kv := newTestRegistry(t, path)
	var notified []string
	r.Subscribe(func(id string) { notified = append(notified, id) })
	g, err := r.Create(t.Context(), validGateway(), tok1)
	if err != nil {
		t.Fatal(err)
	}
	if g.AuthMode != AuthToken || g.Revision != 1 {
		t.Fatalf("defaults: got mode %q rev %d", g.AuthMode, g.Revision)
	}
	if bytes.Contains(g.TokenSealed, []byte(tok1)) {
		t.Fatal("token stored in clear")
	}
	e, ok := r.ByToken(tok1)
	if !ok || e.ID != "gw1" || string(e.Token) != tok1 {
		t.Fatalf("ByToken: %v %v", ok, e)
	}
	if _, ok := r.ByToken(tok2); ok {
		t.Fatal("unknown token found")
	}
	if _, ok := s.gws["gw1"]; !ok || len(notified) != 1 {
		t.Fatalf("sync/notify missing: %v %v", s.gws, notified)
	}
	if _, err := r.Create(t.Context(), validGateway(), tok2); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate id: got %v, want ErrExists", err)
	}
	other := validGateway()
	other.ID = "gw2"
	if _, err := r.Create(t.Context(), other, tok1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("reused token: got %v, want ErrInvalid", err)
	}
	// Update keeps identity and secrets whatever the change function does.
	g2, err := r.Update(t.Context(), "gw1", func(g *Gateway) error {
		g.Members = map[string]string{"user_v": RoleViewer}
		g.Tenant, g.TokenHash = "tenant-b", nil
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if g2.Tenant != "tenant-a" || g2.Revision != 2 || len(g2.TokenHash) != 32 {
		t.Fatalf("update changed identity: %+v", g2)
	}
	// A reload from the store gives the same registry.
	kv.Close()
	r2, s2, _ := newTestRegistry(t, path)
	got, err := r2.Get("gw1")
	if err != nil || got.Members["user_v"] != RoleViewer || s2.gws["gw1"].Revision != 2 {
		t.Fatalf("after reload: %+v %v", got, err)
	}
	if e, ok := r2.ByToken(tok1); !ok || string(e.Token) != tok1 {
		t.Fatal("token lost on reload")
	}
	if err := r2.Delete(t.Context(), "gw1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := r2.ByToken(tok1); ok || r2.Len() != 0 || len(s2.gws) != 0 {
		t.Fatal("delete left traces")
	}
	if err := r2.Delete(t.Context(), "gw1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: got %v", err)
	}
}

func TestInvalidChangesWriteNothing(t *testing.T) {
	r, s, _ := newTestRegistry(t, filepath.Join(t.TempDir(), "m.db"))
	if _, err := r.Create(t.Context(), validGateway(), tok1); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func(*Gateway)
		want   []string
	}{
		{"bad role", func(g *Gateway) { g.Members = map[string]string{"u1": "root"} }, []string{`members[u1]: role "root"`}},
		{"bad cidr and skill", func(g *Gateway) { g.Allowlist = []string{"10.0.0.0/33"}; g.Skills.Deny = []string{"a b"} },
			[]string{"allowlist[0]", "skills.deny[0]"}},
		{"upstream with credentials", func(g *Gateway) { g.Upstream = "http://user:hunter2@h/" }, []string{`upstream "http://redacted@h/"`}},
		// Issue 16: the value is echoed, once, so the writer sees what was refused.
		{"upstream of another scheme", func(g *Gateway) { g.Upstream = "ftp://x" }, []string{`upstream "ftp://x": want http(s)://`}},
		{"unparseable upstream with user info", func(g *Gateway) { g.Upstream = "http://user:hunter2@h:port/" }, []string{"upstream (not shown"}},
		{"bad mode", func(g *Gateway) { g.AuthMode = "none" }, []string{"auth_mode"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.Update(t.Context(), "gw1", func(g *Gateway) error { tt.change(g); return nil })
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "user:") {
				t.Errorf("error leaks a credential: %v", err)
			}
			if g, _ := r.Get("gw1"); g.Revision != 1 || s.gws["gw1"].Revision != 1 {
				t.Fatalf("invalid change was applied: rev %d", g.Revision)
			}
		})
	}
	for _, bad := range []Gateway{
		{ID: "GW", Tenant: "t", Owner: "o", Upstream: "http://h"},
		{ID: "a.b", Tenant: "t", Owner: "o", Upstream: "http://h"},
		{ID: "-a", Tenant: "t", Owner: "o", Upstream: "http://h"},
		{ID: "ok", Tenant: "", Owner: "o", Upstream: "http://h"},
		{ID: "ok", Tenant: "t", Owner: "o", Upstream: "ftp://h"},
	} {
		if _, err := r.Create(t.Context(), bad, tok2); !errors.Is(err, ErrInvalid) {
			t.Errorf("Create(%+v): got %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := r.Create(t.Context(), Gateway{ID: "ok", Tenant: "t", Owner: "o", Upstream: "http://h"}, "short"); !errors.Is(err, ErrInvalid) {
		t.Errorf("short token: got %v", err)
	}
	if r.Len() != 1 {
		t.Fatalf("registry holds %d gateways, want 1", r.Len())
	}
}

func TestSyncFailureIsReported(t *testing.T) {
	r, s, _ := newTestRegistry(t, filepath.Join(t.TempDir(), "m.db"))
	s.err = errors.New("engine down")
	if _, err := r.Create(t.Context(), validGateway(), tok1); err == nil {
		t.Fatal("create succeeded although the policy data could not follow")
	}
	if _, ok := r.Lookup("gw1"); ok {
		t.Fatal("gateway visible to the request path although policy data lags")
	}
}

func TestParseCIDR(t *testing.T) {
	for in, want := range map[string]string{"10.1.2.3": "10.1.2.3/32", "10.1.2.3/8": "10.0.0.0/8",
		"::1": "::1/128", "2001:db8::/32": "2001:db8::/32", "::ffff:10.0.0.1": "10.0.0.1/32"} {
		p, err := ParseCIDR(in)
		if err != nil || p.String() != want {
			t.Errorf("ParseCIDR(%q): got %v, %v, want %s", in, p, err, want)
		}
	}
	for _, in := range []string{"", "10.0.0.0/", "x", "10.0.0.256", "1.2.3.4/-1"} {
		if _, err := ParseCIDR(in); err == nil {
			t.Errorf("ParseCIDR(%q) accepted", in)
		}
	}
}

// Issue 16: a CIDR with host bits set ("10.0.0.5/24") admits its whole network; whoever
// wrote it may have meant the one address. CheckCIDR refuses it with both normal forms.
func TestCheckCIDR(t *testing.T) {
	tests := []struct{ in, want string }{
		{"10.0.0.0/24", ""},
		{"10.0.0.5", ""},
		{"2001:db8::/64", ""},
		{"10.0.0.5/24", `"10.0.0.5/24" has host bits set: write 10.0.0.0/24 for the network, or 10.0.0.5/32 for the one address`},
		{"2001:db8::1/64", `write 2001:db8::/64 for the network, or 2001:db8::1/128 for the one address`},
		{"10.0.0.0/33", `"10.0.0.0/33": not an IP address or CIDR`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			err := CheckCIDR(tt.in)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
}

// SetToken swaps the token in one change: the old one stops identifying the gateway, the new
// one does, the upstream token follows, and it survives a reload (issue 14).
func TestSetToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	r, s, kv := newTestRegistry(t, path)
	if _, err := r.Create(t.Context(), validGateway(), tok1); err != nil {
		t.Fatal(err)
	}
	var notified int
	r.Subscribe(func(string) { notified++ })
	g, err := r.SetToken(t.Context(), "gw1", tok2)
	if err != nil {
		t.Fatal(err)
	}
	if g.Revision != 2 || s.gws["gw1"].Revision != 2 || notified != 1 {
		t.Fatalf("got revision %d (policy data %d), %d notifications; want 2, 2, 1", g.Revision, s.gws["gw1"].Revision, notified)
	}
	if _, ok := r.ByToken(tok1); ok {
		t.Fatal("the old token still identifies the gateway")
	}
	if e, ok := r.ByToken(tok2); !ok || string(e.Token) != tok2 {
		t.Fatalf("the new token: found %v", ok)
	}
	if g, err := r.SetToken(t.Context(), "gw1", tok2); err != nil || g.Revision != 2 {
		t.Fatalf("setting the same token again: revision %d, %v; want 2, nil", g.Revision, err)
	}
	if _, err := r.SetToken(t.Context(), "nope", tok1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown gateway: got %v, want ErrNotFound", err)
	}
	if _, err := r.SetToken(t.Context(), "gw1", "short"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad token: got %v, want ErrInvalid", err)
	}
	other := validGateway()
	other.ID = "gw2"
	if _, err := r.Create(t.Context(), other, tok1); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SetToken(t.Context(), "gw1", tok1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("another gateway's token: got %v, want ErrInvalid", err)
	}
	kv.Close()
	r2, _, _ := newTestRegistry(t, path)
	if e, ok := r2.ByToken(tok2); !ok || e.ID != "gw1" || string(e.Token) != tok2 {
		t.Fatal("the new token did not survive a reload")
	}
}
