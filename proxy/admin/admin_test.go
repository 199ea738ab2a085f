package admin_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/proxy/authn"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
	"github.com/moltgate/moltgate/registry"
	"github.com/moltgate/moltgate/store"
)

const adminToken = "admintoken-0123456789-0123456789-0123456789"

type fixture struct {
	srv      *httptest.Server
	clerk    *clerktest.Server
	auditDir string
	audit    *audit.FileLog
}

// newFixture starts the admin API on a real registry, policy engine, Clerk stand-in and
// audit log; opts adjust its configuration and parts before it starts.
func newFixture(t *testing.T, opts ...func(*admin.Config, *admin.Deps)) *fixture {
	t.Helper()
	f := &fixture{clerk: clerktest.New(t), auditDir: filepath.Join(t.TempDir(), "audit")}
	logger := slog.New(slog.DiscardHandler)
	engine, err := policies.New(t.Context(), policies.Config{Timeout: testDecisionTimeout}, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := engine.SetPlatformAdmins(t.Context(), []string{"user_platform"}); err != nil {
		t.Fatal(err)
	}
	kv, err := store.OpenBolt(filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })
	ring, _ := keystore.NewKeyring(1, bytes.Repeat([]byte{1}, 32))
	reg, err := registry.New(t.Context(), kv, keystore.New(ring), engine, nil)
	if err != nil {
		t.Fatal(err)
	}
	clerk, err := authn.NewClerk(authn.ClerkConfig{APIURL: f.clerk.URL, SecretKey: f.clerk.SecretKey(), Issuer: f.clerk.Issuer(),
		AuthorizedParties: []string{clerktest.DefaultAuthorizedParty}}, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	al, err := audit.OpenFile(audit.FileConfig{Dir: f.auditDir}, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close() })
	f.audit = al
	cfg := admin.Config{AdminToken: []byte(adminToken)}
	deps := admin.Deps{Registry: reg, Policy: engine, Sessions: clerk, Audit: al, Logger: logger}
	for _, o := range opts {
		o(&cfg, &deps)
	}
	s, err := admin.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(listener(s))
	t.Cleanup(f.srv.Close)
	return f
}

// listener is the admin listener as serve builds it: its own endpoints, the API for every
// other path, and the API's path check in front.
func listener(s *admin.Server) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.Handle("/", s)
	return s.Guard(mux)
}

func (f *fixture) client(cred string) *admin.Client {
	return &admin.Client{BaseURL: f.srv.URL, Token: cred, HTTP: f.srv.Client()}
}

func (f *fixture) user(sub string) *admin.Client {
	return f.client(f.clerk.Mint(clerktest.Claims{Subject: sub}))
}

func (f *fixture) events(t *testing.T) []audit.Event {
	t.Helper()
	if _, err := audit.VerifyDir(f.auditDir); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(f.auditDir, "events-000001.jsonl"))
	var out []audit.Event
	for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var e audit.Event
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func wantAPIError(t *testing.T, err error, status int, reason string) {
	t.Helper()
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.Status != status || (reason != "" && ae.Reason != reason) {
		t.Fatalf("got %v, want %d %s", err, status, reason)
	}
}

func TestAdminLifecycle(t *testing.T) {
	f := newFixture(t)
	ops := f.client(adminToken)
	ctx := t.Context()
	resp, err := ops.Create(ctx, admin.CreateRequest{ID: "gw1", Tenant: "tenant-a", Owner: "user_owner", Upstream: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(resp.Token) || resp.Gateway.AuthMode != registry.AuthToken {
		t.Fatalf("create: %+v", resp)
	}
	given := strings.Repeat("ab", 32)
	resp2, err := ops.Create(ctx, admin.CreateRequest{ID: "gw2", Tenant: "tenant-b", Owner: "user_other", Upstream: "http://127.0.0.1:2",
		AuthMode: registry.AuthTrustedProxy, Token: given})
	if err != nil || resp2.Token != "" {
		t.Fatalf("create with a given token must not echo it: %+v %v", resp2, err)
	}
	_, err = ops.Create(ctx, admin.CreateRequest{ID: "gw1", Tenant: "t", Owner: "o", Upstream: "http://h"})
	wantAPIError(t, err, 409, "gateway_exists")

	// The owner manages their gateway and sees only it.
	owner := f.user("user_owner")
	list, err := owner.List(ctx)
	if err != nil || len(list) != 1 || list[0].ID != "gw1" {
		t.Fatalf("owner list: %+v %v", list, err)
	}
	if all, _ := ops.List(ctx); len(all) != 2 {
		t.Fatalf("operator list: %d gateways", len(all))
	}
	if _, err := owner.SetMember(ctx, "gw1", "user_admin", "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.SetMember(ctx, "gw1", "user_viewer", "viewer"); err != nil {
		t.Fatal(err)
	}
	g, err := owner.SetAllowlist(ctx, "gw1", []string{"192.0.2.0/24", "2001:db8::1"})
	if err != nil || len(g.Allowlist) != 2 {
		t.Fatalf("allowlist: %+v %v", g, err)
	}
	if g, err = owner.SetSkills(ctx, "gw1", registry.SkillRules{Deny: []string{"exec"}}); err != nil || g.Skills.Deny[0] != "exec" {
		t.Fatalf("skills: %+v %v", g, err)
	}
	// A member admin may manage members; a viewer may read but not change.
	if _, err := f.user("user_admin").SetMember(ctx, "gw1", "user_op", "operator"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.user("user_viewer").Get(ctx, "gw1"); err != nil {
		t.Fatal(err)
	}
	_, err = f.user("user_viewer").SetMember(ctx, "gw1", "user_viewer", "admin")
	wantAPIError(t, err, 403, "role_forbids")
	// Nobody reaches another tenant's gateway.
	_, err = owner.Get(ctx, "gw2")
	wantAPIError(t, err, 403, "not_a_member")
	_, err = owner.SetMember(ctx, "gw2", "user_owner", "admin")
	wantAPIError(t, err, 403, "not_a_member")
	// Creating gateways is for platform admins.
	_, err = owner.Create(ctx, admin.CreateRequest{ID: "gw3", Tenant: "tenant-a", Owner: "user_owner", Upstream: "http://h"})
	wantAPIError(t, err, 403, "")
	if _, err := f.user("user_platform").Create(ctx, admin.CreateRequest{ID: "gw3", Tenant: "tenant-c", Owner: "user_c", Upstream: "http://h"}); err != nil {
		t.Fatalf("platform admin create: %v", err)
	}
	if _, err := owner.RemoveMember(ctx, "gw1", "user_viewer"); err != nil {
		t.Fatal(err)
	}
	_, err = owner.RemoveMember(ctx, "gw1", "user_nobody")
	wantAPIError(t, err, 404, "unknown_member")
	if err := ops.Delete(ctx, "gw3"); err != nil {
		t.Fatal(err)
	}
	_, err = ops.Get(ctx, "gw3")
	wantAPIError(t, err, 404, "unknown_gateway")

	// Every change is an admin.change event naming its actor, after an admin.request for the
	// same action and actor; no event holds a credential.
	// (The calls are sequential, so each outcome directly follows its request.)
	changes := 0
	var requested *audit.Event
	for _, e := range f.events(t) {
		switch e.Type {
		case audit.TypeAdminRequest:
			requested = &e
		case audit.TypeAdminChange:
			if requested == nil || requested.Action != e.Action || requested.Actor != e.Actor {
				t.Fatalf("change %s by %+v without its request just before it (got %+v)", e.Action, e.Actor, requested)
			}
			requested = nil
		case audit.TypeAdminDeny:
			requested = nil
		}
		raw, _ := json.Marshal(e)
		if strings.Contains(string(raw), resp.Token) || strings.Contains(string(raw), given) || strings.Contains(string(raw), adminToken) {
			t.Fatalf("event holds a secret: %s", raw)
		}
		if e.Type == audit.TypeAdminChange && e.Outcome == "success" {
			changes++
			if e.Actor.Kind == "" || e.Action == "" {
				t.Fatalf("change without actor or action: %+v", e)
			}
		}
	}
	if changes != 10 {
		t.Fatalf("audited changes: got %d, want 10", changes)
	}
}

func TestAdminRefusesBadCallersAndBodies(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	for _, cred := range []string{"", "wrong-admin-token", strings.Repeat("cd", 32), "garbage.jwt.here"} {
		_, err := f.client(cred).List(ctx)
		wantAPIError(t, err, 401, "")
	}
	expired := f.clerk.Mint(clerktest.Claims{Subject: "user_platform", IssuedAt: timeAgo(), Expiry: timeAgo().Add(5e9)})
	_, err := f.client(expired).List(ctx)
	wantAPIError(t, err, 401, "expired")

	post := func(body string) (int, map[string]string) {
		req, _ := http.NewRequestWithContext(ctx, "POST", f.srv.URL+"/v1/gateways", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]string
		b, _ := io.ReadAll(resp.Body)
		json.Unmarshal(b, &m)
		return resp.StatusCode, m
	}
	for name, body := range map[string]string{
		"unknown field":  `{"id":"gw1","tenant":"t","owner":"o","upstream":"http://h","admin":true}`,
		"trailing data":  `{"id":"gw1","tenant":"t","owner":"o","upstream":"http://h"} {}`,
		"not json":       `id=gw1`,
		"oversized":      `{"id":"` + strings.Repeat("a", 70<<10) + `"}`,
		"invalid fields": `{"id":"GW 1","tenant":"","owner":"o","upstream":"ftp://h","auth_mode":"none"}`,
		"bad token":      `{"id":"gw1","tenant":"t","owner":"o","upstream":"http://h","token":"short"}`,
	} {
		status, m := post(body)
		if status != 400 || m["reason"] == "" {
			t.Errorf("%s: got %d %v, want 400", name, status, m)
		}
	}
	status, m := post(`{"id":"GW 1","tenant":"","owner":"o","upstream":"ftp://h"}`)
	for _, field := range []string{"id", "tenant", "upstream"} {
		if !strings.Contains(m["error"], field) {
			t.Errorf("validation error %q (status %d) does not name %s", m["error"], status, field)
		}
	}
	if list, _ := f.client(adminToken).List(ctx); len(list) != 0 {
		t.Fatalf("a refused create left %d gateways", len(list))
	}
	for _, e := range f.events(t) {
		if e.Outcome == "success" {
			t.Fatalf("refused calls audited as success: %+v", e)
		}
	}
}

func timeAgo() time.Time { return time.Now().Add(-time.Hour) }

// A change whose request cannot be put on record is refused (503 audit_unavailable) and not
// made.
func TestAdminChangeUnrecordedIsNotMade(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	ops := f.client(adminToken)
	if _, err := ops.Create(ctx, admin.CreateRequest{ID: "gw1", Tenant: "tenant-a", Owner: "user_owner", Upstream: "http://127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	f.audit.Close()
	_, err := ops.Create(ctx, admin.CreateRequest{ID: "gw2", Tenant: "tenant-a", Owner: "user_owner", Upstream: "http://127.0.0.1:1"})
	wantAPIError(t, err, 503, "audit_unavailable")
	err = ops.Delete(ctx, "gw1")
	wantAPIError(t, err, 503, "audit_unavailable")
	gws, err := ops.List(ctx) // reads are not audited, so they still answer
	if err != nil {
		t.Fatal(err)
	}
	if len(gws) != 1 || gws[0].ID != "gw1" {
		t.Fatalf("gateways after refused changes: %+v, want gw1 only", gws)
	}
}

// testDecisionTimeout is the policy timeout of the fixtures: these tests are about what is
// decided, and -race on a loaded machine can hold one decision past the default 250 ms.
const testDecisionTimeout = 10 * time.Second
