package admin_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/registry"
)

// Issue 16, least privilege: a gateway's upstream URL is an internal address. Only those who
// administer the gateway (its owner, members with the admin role, platform admins, the admin
// token) see it, in every answer that shows the gateway; viewers and operators see the
// gateway without it.
func TestAdminUpstreamOnlyForAdministrators(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	ops := f.client(adminToken)
	const upstream = "http://10.1.2.3:18789"
	if _, err := ops.Create(ctx, admin.CreateRequest{ID: "gw1", Tenant: "tenant-a", Owner: "user_owner", Upstream: upstream}); err != nil {
		t.Fatal(err)
	}
	for user, role := range map[string]string{"user_viewer": "viewer", "user_operator": "operator", "user_admin": "admin"} {
		if _, err := ops.SetMember(ctx, "gw1", user, role); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		caller string
		client *admin.Client
		sees   bool
	}{
		{"admin token", ops, true},
		{"platform admin", f.user("user_platform"), true},
		{"owner", f.user("user_owner"), true},
		{"admin role", f.user("user_admin"), true},
		{"operator", f.user("user_operator"), false},
		{"viewer", f.user("user_viewer"), false},
	}
	for _, tt := range tests {
		t.Run(tt.caller, func(t *testing.T) {
			want := ""
			if tt.sees {
				want = upstream
			}
			list, err := tt.client.List(ctx)
			if err != nil || len(list) != 1 {
				t.Fatalf("list: got %+v, %v; want gw1", list, err)
			}
			g, err := tt.client.Get(ctx, "gw1")
			if err != nil {
				t.Fatal(err)
			}
			if list[0].Upstream != want || g.Upstream != want {
				t.Errorf("upstream: got %q in the list and %q in show, want %q", list[0].Upstream, g.Upstream, want)
			}
		})
	}
	// A change's answer shows the gateway as its writer may see it.
	g, err := f.user("user_admin").SetSkills(ctx, "gw1", registry.SkillRules{Deny: []string{"exec"}})
	if err != nil || g.Upstream != upstream {
		t.Fatalf("admin role's change: got %+v, %v; want the upstream shown", g, err)
	}
}

// Issue 16: each refusal of a mistake says what is wrong, naming the value once, with the
// reason code saying "invalid" (or what it is) once.
func TestAdminRefusalsSayWhatIsWrong(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	ops := f.client(adminToken)
	if _, err := ops.Create(ctx, admin.CreateRequest{ID: "demo", Tenant: "acme", Owner: "user_alice", Upstream: "http://127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		call   func() error
		status int
		reason string
		msg    string
	}{
		{"remove a user who is not a member", func() error { _, err := ops.RemoveMember(ctx, "demo", "user_nobody"); return err },
			404, "unknown_member", "user_nobody is not a member of gateway demo"},
		{"remove a member of a gateway that does not exist", func() error { _, err := ops.RemoveMember(ctx, "nope", "user_nobody"); return err },
			404, "unknown_gateway", ""},
		{"upstream of another scheme", func() error {
			_, err := ops.Create(ctx, admin.CreateRequest{ID: "demo2", Tenant: "acme", Owner: "user_alice", Upstream: "ftp://x"})
			return err
		}, 400, "invalid", `upstream "ftp://x": want http(s)://host[:port][/path]`},
		{"a tool both allowed and denied", func() error {
			_, err := ops.SetSkills(ctx, "demo", registry.SkillRules{Allow: []string{"exec", "web_search"}, Deny: []string{"exec"}})
			return err
		}, 400, "invalid", `skills: "exec" is both allowed and denied`},
		{"an alias allowed, its tool denied", func() error {
			_, err := ops.SetSkills(ctx, "demo", registry.SkillRules{Allow: []string{"bash"}, Deny: []string{"exec"}})
			return err
		}, 400, "invalid", `skills: "bash" (allowed) and "exec" (denied) name the same tool`},
		{"a CIDR with host bits set", func() error {
			_, err := ops.SetAllowlist(ctx, "demo", []string{"192.0.2.0/24", "10.0.0.5/24"})
			return err
		}, 400, "invalid", `allowlist[1]: "10.0.0.5/24" has host bits set: write 10.0.0.0/24 for the network, or 10.0.0.5/32 for the one address`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var ae *admin.APIError
			if !errors.As(err, &ae) || ae.Status != tt.status || ae.Reason != tt.reason {
				t.Fatalf("got %v, want %d %s", err, tt.status, tt.reason)
			}
			if !strings.Contains(ae.Message, tt.msg) {
				t.Errorf("message: got %q, want it to contain %q", ae.Message, tt.msg)
			}
			if n := strings.Count(strings.ToLower(err.Error()), "invalid"); n > 1 {
				t.Errorf("%q says invalid %d times", err, n)
			}
			if strings.Contains(ae.Message, "registry:") {
				t.Errorf("message %q names a Go package", ae.Message)
			}
		})
	}
	g, err := ops.Get(ctx, "demo")
	if err != nil || len(g.Allowlist) != 0 || len(g.Skills.Allow)+len(g.Skills.Deny) != 0 {
		t.Fatalf("refused changes were made: %+v %v", g, err)
	}
}
