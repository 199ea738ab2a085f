package admin_test

import (
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
	"github.com/moltgate/moltgate/proxy/browser"
	"github.com/moltgate/moltgate/store"
)

// withBrowser gives the fixture's admin API browser sessions on a store of their own; clerkOff
// runs it as the development defaults do, with no Clerk.
func withBrowser(t *testing.T, sessions **browser.Sessions, clerkOff bool) func(*admin.Config, *admin.Deps) {
	return func(cfg *admin.Config, deps *admin.Deps) {
		kv, err := store.OpenBolt(filepath.Join(t.TempDir(), "b.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { kv.Close() })
		s, err := browser.New(browser.Config{}, kv, nil, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		*sessions, deps.Browser = s, s
		cfg.GatewayURL = func(id string) string { return "https://" + id + ".gw.example.test" }
		if clerkOff {
			deps.Sessions = nil
		}
	}
}

// TestAdminLaunch: a launch link is for the person asking, bound to their Clerk session, and
// only for someone allowed on the gateway; the admin token gets the owner's only while Clerk
// is off (`moltgate gateway open`), never a user's session with Clerk on.
func TestAdminLaunch(t *testing.T) {
	var sessions *browser.Sessions
	f := newFixture(t, withBrowser(t, &sessions, false))
	ctx := t.Context()
	if _, err := f.client(adminToken).Create(ctx, admin.CreateRequest{ID: "gw1", Tenant: "tenant-a", Owner: "user_owner", Upstream: "http://127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client(adminToken).SetMember(ctx, "gw1", "user_viewer", "viewer"); err != nil {
		t.Fatal(err)
	}

	l, err := f.user("user_viewer").Launch(ctx, "gw1", "//evil.example/steal")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(l.URL)
	if u.Scheme != "https" || u.Host != "gw1.gw.example.test" || u.Path != "/.moltgate/launch" || len(u.Query().Get("code")) != 43 {
		t.Fatalf("launch URL: got %q", l.URL)
	}
	tok, sess, ret, err := sessions.Redeem(u.Query().Get("code"), "gw1")
	if err != nil || tok == "" || ret != "/" {
		t.Fatalf("redeem: got %q, %v (return %q, want / for an open redirect)", tok, err, ret)
	}
	if sess.UserID != "user_viewer" || sess.ClerkSession != clerktest.DefaultSessionID || sess.Gateway != "gw1" {
		t.Fatalf("session: got %+v, want user_viewer's Clerk session on gw1", sess)
	}

	_, err = f.user("user_stranger").Launch(ctx, "gw1", "/")
	wantAPIError(t, err, 403, "not_a_member")
	_, err = f.client(adminToken).Launch(ctx, "gw1", "/")
	wantAPIError(t, err, 403, "launch_needs_user_session")
	_, err = f.user("user_viewer").Launch(ctx, "nope", "/")
	wantAPIError(t, err, 404, "unknown_gateway")

	// Sessions: each user sees and revokes their own; whoever may change the gateway's
	// members revokes any of its sessions; others' sessions are as unknown as missing ones.
	if _, err := f.user("user_owner").Launch(ctx, "gw1", "/"); err != nil {
		t.Fatal(err)
	}
	mine, err := f.user("user_viewer").Sessions(ctx, "", "")
	if err != nil || len(mine) != 1 || mine[0].ID != sess.ID {
		t.Fatalf("viewer's sessions: got %+v, %v", mine, err)
	}
	if other, _ := f.user("user_stranger").Sessions(ctx, "", ""); len(other) != 0 {
		t.Fatalf("a stranger sees sessions: %+v", other)
	}
	err = f.user("user_stranger").RevokeSession(ctx, sess.ID)
	wantAPIError(t, err, 404, "unknown_session")
	if err := f.user("user_owner").RevokeSession(ctx, sess.ID); err != nil {
		t.Fatalf("owner revoking a member's session: %v", err)
	}
	if _, _, err := sessions.Lookup(tok, "gw1"); err == nil {
		t.Fatal("revoked session still valid")
	}
	if all, err := f.client(adminToken).Sessions(ctx, "gw1", ""); err != nil || len(all) != 0 {
		t.Fatalf("after revoke: got %+v, %v (launch codes are not sessions)", all, err)
	}
	for _, e := range f.events(t) {
		if strings.Contains(e.Details["return_path"], "evil") || strings.Contains(strings.Join(mapValues(e.Details), " "), u.Query().Get("code")) {
			t.Fatalf("event leaks the code or keeps the unsafe return path: %+v", e)
		}
	}
}

// TestAdminLaunchWithoutClerk: on the development defaults the admin token opens the
// owner's session (moltgate gateway open).
func TestAdminLaunchWithoutClerk(t *testing.T) {
	var sessions *browser.Sessions
	f := newFixture(t, withBrowser(t, &sessions, true))
	ctx := t.Context()
	if _, err := f.client(adminToken).Create(ctx, admin.CreateRequest{ID: "gw1", Tenant: "tenant-a", Owner: "user_owner", Upstream: "http://127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	l, err := f.client(adminToken).Launch(ctx, "gw1", "/chat")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(l.URL)
	_, sess, ret, err := sessions.Redeem(u.Query().Get("code"), "gw1")
	if err != nil || sess.UserID != "user_owner" || sess.ClerkSession != "" || ret != "/chat" {
		t.Fatalf("redeem: got %+v, %q, %v", sess, ret, err)
	}
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
