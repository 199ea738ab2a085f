package admin_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
	"github.com/moltgate/moltgate/registry"
)

// Tests of issue 15, part 4: the audit trail of the admin API.

// orgAdmin is a Clerk session of an admin of organization (tenant) org.
func (f *fixture) orgAdmin(sub, org string) *admin.Client {
	return f.client(f.clerk.Mint(clerktest.Claims{Subject: sub, Org: &clerktest.Org{ID: org, Slug: org, Role: "admin"}}))
}

// Refusals of calls about a gateway are filed under the gateway's tenant, so its admins see
// them: an authentication failure on /v1/gateways/{id} (whose answer does not tell whether
// the gateway exists), and a create of an existing id, whatever tenant its body names.
// decisionIDField is a refusal body's decision id.
var decisionIDField = regexp.MustCompile(`,"decision_id":"[0-9a-f]{32}"`)

func TestAdminRefusalsFiledUnderTheGatewaysTenant(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	ops := f.client(adminToken)
	if _, err := ops.Create(ctx, admin.CreateRequest{ID: "gw1", Tenant: "tenant-a", Owner: "user_a", Upstream: "http://127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	var answers []string
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/gateways/gw1"},
		{"DELETE", "/v1/gateways/gw1"},
		{"PUT", "/v1/gateways/gw1/allowlist"},
		{"GET", "/v1/gateways/gw9"}, // none: answered alike
	} {
		status, body := send(t, f.srv.Client(), f.srv.URL+c.path, c.method, `{"cidrs":[]}`,
			"Authorization", "Bearer wrong-admin-token", "Content-Type", "application/json")
		if status != 401 {
			t.Fatalf("%s %s: got %d %s, want 401", c.method, c.path, status, body)
		}
		// Each answer names its own decision (issue 12): the rest must be alike.
		answers = append(answers, decisionIDField.ReplaceAllString(body, ""))
	}
	if answers[0] != answers[3] {
		t.Fatalf("the answer tells an existing gateway from none: %q, %q", answers[0], answers[3])
	}
	_, err := ops.Create(ctx, admin.CreateRequest{ID: "gw1", Tenant: "tenant-b", Owner: "user_b", Upstream: "http://127.0.0.1:2"})
	wantAPIError(t, err, 409, "gateway_exists")

	page, err := f.orgAdmin("user_a_admin", "tenant-a").Audit(ctx, admin.AuditQuery{Tenant: "tenant-a"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, e := range page.Events {
		got[e.Type+" "+e.Details["method"]+" "+e.Gateway]++
	}
	for _, want := range []string{
		audit.TypeAdminChange + " POST gw1",
		audit.TypeAuthnFailure + " GET gw1",
		audit.TypeAuthnFailure + " DELETE gw1",
		audit.TypeAuthnFailure + " PUT gw1",
		audit.TypeAdminDeny + " POST gw1", // the conflicting create
	} {
		if got[want] != 1 {
			t.Errorf("tenant-a's admin sees %d events %q, want 1 (sees %v)", got[want], want, got)
		}
	}
	page, err = f.orgAdmin("user_b_admin", "tenant-b").Audit(ctx, admin.AuditQuery{Tenant: "tenant-b"})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range page.Events {
		if e.Gateway == "gw1" {
			t.Errorf("an event about tenant-a's gateway filed under tenant-b: %+v", e)
		}
	}
	for _, e := range f.events(t) {
		if e.Gateway == "gw9" && e.Tenant != "" {
			t.Errorf("an event about no gateway filed under %q", e.Tenant)
		}
	}
}

// faultyAudit is the real audit log with one fault injected: the events fail picks are not
// written, as when the spool fills between a call's request and its outcome.
type faultyAudit struct {
	*audit.FileLog
	fail func(audit.Event) bool
}

func (a *faultyAudit) Emit(ctx context.Context, e audit.Event) error {
	if a.fail(e) {
		return errors.New("injected fault: spool full")
	}
	return a.FileLog.Emit(ctx, e)
}

// refusalsUnrecorded makes the admin.deny events of a fixture fail to be written.
func refusalsUnrecorded(_ *admin.Config, d *admin.Deps) {
	d.Audit = &faultyAudit{FileLog: d.Audit.(*audit.FileLog), fail: func(e audit.Event) bool { return e.Type == audit.TypeAdminDeny }}
}

// A refusal after the call's request is on record (invalid input, a conflict, an unknown
// gateway or key, a key in the wrong state) whose own event cannot be written is answered
// 503 audit_unavailable, as every unrecorded refusal is, and changes nothing.
func TestAdminRefusalUnrecordedIs503(t *testing.T) {
	f := newFixture(t, refusalsUnrecorded)
	ctx := t.Context()
	ops := f.client(adminToken)
	if _, err := ops.Create(ctx, admin.CreateRequest{ID: "gw1", Tenant: "tenant-a", Owner: "user_a", Upstream: "http://127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	kf := newKeysFixture(t, refusalsUnrecorded)
	owner := kf.client(kf.clerk.Mint(clerktest.Claims{Subject: "user_k", Org: &clerktest.Org{ID: "org_k", Slug: "org_k", Role: "admin"}}))
	k, err := owner.AddKey(ctx, "org_k", addKey(oldKey))
	if err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"invalid create": func() error {
			_, err := ops.Create(ctx, admin.CreateRequest{ID: "GW 2", Tenant: "tenant-a", Owner: "o", Upstream: "ftp://h"})
			return err
		},
		"conflicting create": func() error {
			_, err := ops.Create(ctx, admin.CreateRequest{ID: "gw1", Tenant: "tenant-a", Owner: "o", Upstream: "http://h"})
			return err
		},
		"invalid allowlist": func() error { _, err := ops.SetAllowlist(ctx, "gw1", []string{"not a cidr"}); return err },
		"unknown member":    func() error { _, err := ops.RemoveMember(ctx, "gw1", "user_nobody"); return err },
		"unknown gateway":   func() error { _, err := ops.Get(ctx, "gw9"); return err },
		"invalid key": func() error {
			_, err := owner.AddKey(ctx, "org_k", admin.AddKeyRequest{Provider: "Open AI!", Secret: newKey})
			return err
		},
		"unknown key":      func() error { _, err := owner.GetKey(ctx, "org_k", "k_0000000000000000"); return err },
		"key not verified": func() error { _, err := owner.ActivateKey(ctx, "org_k", k.ID); return err },
		"invalid audit query": func() error {
			_, err := ops.Audit(ctx, admin.AuditQuery{Type: strings.Repeat("t", 201)})
			return err
		},
	} {
		t.Run(name, func(t *testing.T) { wantAPIError(t, call(), 503, "audit_unavailable") })
	}
	if g, err := ops.Get(ctx, "gw1"); err != nil || g.Owner != "user_a" || len(g.Allowlist) != 0 {
		t.Fatalf("gw1 after the refusals: %+v %v", g, err)
	}
	if keys, err := owner.ListKeys(ctx, "org_k"); err != nil || len(keys) != 1 || keys[0].State != keystore.StateAdded {
		t.Fatalf("keys after the refusals: %+v %v", keys, err)
	}
}

// Admin request bodies are read strictly: a key matches a field only exactly (as the
// WebSocket relay reads frame keys), and a key twice in one object is a 400, so no body reads
// one way to a reviewer or a log and another way here. Nothing refused changes anything.
func TestAdminBodiesDecodedStrictly(t *testing.T) {
	f := newKeysFixture(t)
	ctx := t.Context()
	ops := f.client(adminToken)
	const tenant = "org_acme"
	if _, err := ops.Create(ctx, admin.CreateRequest{ID: "gw1", Tenant: tenant, Owner: "user_a", Upstream: "http://127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	k, err := ops.AddKey(ctx, tenant, addKey(oldKey))
	if err != nil {
		t.Fatal(err)
	}
	gw, keys := "/v1/gateways/gw1", "/v1/tenants/"+tenant+"/keys"
	for _, c := range []struct{ name, method, path, body, want string }{
		{"create, field in another case", "POST", "/v1/gateways", `{"ID":"gw2","tenant":"t","owner":"o","upstream":"http://h"}`, `unknown field "ID"`},
		{"create, id twice", "POST", "/v1/gateways", `{"id":"gw2","tenant":"t","owner":"o","upstream":"http://h","id":"gw3"}`, `duplicate key "id"`},
		{"create, id twice, once escaped", "POST", "/v1/gateways", `{"id":"gw2","i\u0064":"gw3","tenant":"t","owner":"o","upstream":"http://h"}`, `duplicate key "id"`},
		{"member, role in another case", "PUT", gw + "/members/user_m", `{"role":"viewer","Role":"admin"}`, `unknown field "Role"`},
		{"member, role twice", "PUT", gw + "/members/user_m", `{"role":"viewer","role":"admin"}`, `duplicate key "role"`},
		{"allowlist, in another case", "PUT", gw + "/allowlist", `{"CIDRs":["0.0.0.0/0"]}`, `unknown field "CIDRs"`},
		{"allowlist twice", "PUT", gw + "/allowlist", `{"cidrs":["10.0.0.0/8"],"cidrs":[]}`, `duplicate key "cidrs"`},
		{"skills, deny in another case", "PUT", gw + "/skills", `{"deny":["exec"],"Deny":[]}`, `unknown field "Deny"`},
		{"skills, allow twice", "PUT", gw + "/skills", `{"allow":[],"allow":["exec"]}`, `duplicate key "allow"`},
		{"key, secret twice", "POST", keys, `{"provider":"openai","secret":"` + newKey + `","secret":"` + badKey + `"}`, `duplicate key "secret"`},
		{"key, provider in another case", "POST", keys, `{"Provider":"openai","secret":"` + newKey + `"}`, `unknown field "Provider"`},
		{"revoke, force twice", "POST", keys + "/" + k.ID + "/revoke", `{"force":true,"force":false}`, `duplicate key "force"`},
		{"revoke, force in another case", "POST", keys + "/" + k.ID + "/revoke", `{"Force":false}`, `unknown field "Force"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, body := send(t, f.srv.Client(), f.srv.URL+c.path, c.method, c.body,
				"Authorization", "Bearer "+adminToken, "Content-Type", "application/json")
			var got struct{ Error, Reason string }
			_ = jsonUnmarshal(body, &got)
			if status != 400 || got.Reason != "invalid" || !strings.Contains(got.Error, c.want) {
				t.Errorf("got %d %s, want 400 invalid saying %s", status, body, c.want)
			}
		})
	}
	if gws, err := ops.List(ctx); err != nil || len(gws) != 1 {
		t.Fatalf("gateways after refused creates: %+v %v", gws, err)
	}
	if g, err := ops.Get(ctx, "gw1"); err != nil || len(g.Members) != 0 || len(g.Allowlist) != 0 || len(g.Skills.Allow)+len(g.Skills.Deny) != 0 {
		t.Fatalf("gw1 after refused changes: %+v %v", g, err)
	}
	if ks, err := ops.ListKeys(ctx, tenant); err != nil || len(ks) != 1 || ks[0].State != keystore.StateAdded {
		t.Fatalf("keys after refused changes: %+v %v", ks, err)
	}
	f.scan(t)
}

// A gateway change's admin.change event records the value it changed before and after
// (details old and new, compact JSON: CIDRs, skill rules, a member's role); a deletion
// records the gateway it deleted. No event holds the gateway's token.
func TestAdminChangesRecordOldAndNew(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	ops := f.client(adminToken)
	created, err := ops.Create(ctx, admin.CreateRequest{ID: "gw1", Tenant: "tenant-a", Owner: "user_a", Upstream: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		do       func() error
		action   string
		old, new string
	}{
		{func() error { _, err := ops.SetAllowlist(ctx, "gw1", []string{"192.0.2.0/24"}); return err },
			"admin.allowlist.write", `[]`, `["192.0.2.0/24"]`},
		{func() error {
			_, err := ops.SetAllowlist(ctx, "gw1", []string{"198.51.100.0/24", "2001:db8::/32"})
			return err
		},
			"admin.allowlist.write", `["192.0.2.0/24"]`, `["198.51.100.0/24","2001:db8::/32"]`},
		{func() error {
			_, err := ops.SetSkills(ctx, "gw1", registry.SkillRules{Deny: []string{"exec"}})
			return err
		},
			"admin.skills.write", `{}`, `{"deny":["exec"]}`},
		{func() error {
			_, err := ops.SetSkills(ctx, "gw1", registry.SkillRules{Allow: []string{"search"}, Deny: []string{"exec", "shell"}})
			return err
		}, "admin.skills.write", `{"deny":["exec"]}`, `{"allow":["search"],"deny":["exec","shell"]}`},
		{func() error { _, err := ops.SetMember(ctx, "gw1", "user_m", "viewer"); return err }, "admin.member.write", `null`, `"viewer"`},
		{func() error { _, err := ops.SetMember(ctx, "gw1", "user_m", "admin"); return err }, "admin.member.write", `"viewer"`, `"admin"`},
		{func() error { _, err := ops.RemoveMember(ctx, "gw1", "user_m"); return err }, "admin.member.write", `"admin"`, `null`},
		{func() error { return ops.Delete(ctx, "gw1") }, "admin.gateway.delete", "", ""},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatal(err)
		}
	}
	var changes []audit.Event
	for _, e := range f.events(t) {
		if strings.Contains(fmt.Sprint(e), created.Token) {
			t.Errorf("an event holds the gateway's token: %+v", e)
		}
		if e.Type == audit.TypeAdminChange && e.Action != "admin.gateway.create" {
			changes = append(changes, e)
		}
	}
	if len(changes) != len(steps) {
		t.Fatalf("got %d changes, want %d", len(changes), len(steps))
	}
	for i, s := range steps[:len(steps)-1] {
		e := changes[i]
		if e.Action != s.action || e.Details["old"] != s.old || e.Details["new"] != s.new {
			t.Errorf("step %d: got %s old %s new %s, want %s old %s new %s", i, e.Action, e.Details["old"], e.Details["new"], s.action, s.old, s.new)
		}
	}
	// The deletion records the gateway as it was.
	var deleted admin.Gateway
	del := changes[len(changes)-1]
	if err := jsonUnmarshal(del.Details["old"], &deleted); err != nil || del.Details["new"] != "" {
		t.Fatalf("delete event details %v: %v", del.Details, err)
	}
	if deleted.ID != "gw1" || deleted.Tenant != "tenant-a" || deleted.Owner != "user_a" || deleted.Upstream != "http://127.0.0.1:1" ||
		len(deleted.Allowlist) != 2 || len(deleted.Skills.Deny) != 2 || len(deleted.Members) != 0 {
		t.Fatalf("the deleted gateway on record: %+v", deleted)
	}
}
