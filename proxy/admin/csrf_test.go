package admin_test

import (
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
)

// send makes one admin API call by hand, with exactly the headers given (pairs of name and
// value), and returns the status and the body.
func send(t *testing.T, base *http.Client, url, method, body string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := base.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// Issue 15, part 2: an org admin's session cookie and a text/plain POST from
// https://evil.example added a key, verified it, activated it (demoting the active one) and
// started a tenant rotation. Each of those four calls, forged in each way a browser can send
// it, is refused before it is authenticated, changes nothing, and is on record under the
// tenant; made as the CLI makes it, it still works.
func TestAdminRefusesForgedCrossSiteCalls(t *testing.T) {
	const tenant = "org_acme"
	for _, call := range []struct {
		name   string
		action string // the path after /v1/tenants/{tenant}/keys/{id}/, or the whole path
		body   string
		needs  int // steps of add, verify, activate done on the new key first
		status int
	}{
		{"add a key", "/v1/tenants/" + tenant + "/keys", `{"provider":"openai","secret":"` + newKey + `"}`, 0, 201},
		{"verify it", "verify", "", 1, 200},
		{"activate it", "activate", "", 2, 200},
		{"start a tenant rotation", "/v1/tenants/" + tenant + "/rotate-keys", "", 0, 202},
	} {
		t.Run(call.name, func(t *testing.T) {
			t.Parallel()
			f := newKeysFixture(t)
			ctx := t.Context()
			session := f.clerk.Mint(clerktest.Claims{Subject: "user_alice", Org: &clerktest.Org{ID: tenant, Slug: tenant, Role: "admin"}})
			owner, ops := f.client(session), f.client(adminToken)

			// The tenant's active key, which a forged activate would demote, and the new key
			// as far as the call needs it.
			k1, err := owner.AddKey(ctx, tenant, addKey(oldKey))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := owner.VerifyKey(ctx, tenant, k1.ID); err != nil {
				t.Fatal(err)
			}
			<-f.checked
			if _, err := owner.ActivateKey(ctx, tenant, k1.ID); err != nil {
				t.Fatal(err)
			}
			path := call.action
			if call.needs > 0 {
				k2, err := owner.AddKey(ctx, tenant, addKey(newKey))
				if err != nil {
					t.Fatal(err)
				}
				if call.needs > 1 {
					if _, err := owner.VerifyKey(ctx, tenant, k2.ID); err != nil {
						t.Fatal(err)
					}
					<-f.checked
				}
				path = "/v1/tenants/" + tenant + "/keys/" + k2.ID + "/" + call.action
			}

			const appJSON = "application/json"
			bearer := "Bearer " + session
			forgeries := []struct {
				name   string
				header []string
				status int
				reason string
			}{
				{"as in the issue: session cookie, text/plain, from evil.example",
					[]string{"Cookie", "__session=" + session, "Content-Type", "text/plain", "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"}, 403, "cross_origin"},
				{"session cookie as the credential", []string{"Cookie", "__session=" + session, "Content-Type", appJSON}, 401, "unauthenticated"},
				{"admin token as a session cookie", []string{"Cookie", "__session=" + adminToken, "Content-Type", appJSON}, 401, "unauthenticated"},
				{"text/plain body", []string{"Authorization", bearer, "Content-Type", "text/plain"}, 415, "unsupported_media_type"},
				{"form body", []string{"Authorization", bearer, "Content-Type", "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"},
				{"multipart body", []string{"Authorization", bearer, "Content-Type", "multipart/form-data; boundary=x"}, 415, "unsupported_media_type"},
				{"no content type", []string{"Authorization", bearer}, 415, "unsupported_media_type"},
				{"json in another charset", []string{"Authorization", bearer, "Content-Type", appJSON + "; charset=utf-16"}, 415, "unsupported_media_type"},
				{"cross-site origin", []string{"Authorization", bearer, "Content-Type", appJSON, "Origin", "https://evil.example"}, 403, "cross_origin"},
				{"opaque origin", []string{"Authorization", bearer, "Content-Type", appJSON, "Origin", "null"}, 403, "cross_origin"},
				{"cross-site fetch", []string{"Authorization", bearer, "Content-Type", appJSON, "Sec-Fetch-Site", "cross-site"}, 403, "cross_origin"},
				{"same-site fetch", []string{"Authorization", bearer, "Content-Type", appJSON, "Sec-Fetch-Site", "same-site"}, 403, "cross_origin"},
			}
			type state struct {
				Keys     []keystore.APIKey
				Rotation *keystore.Job
			}
			snapshot := func() state {
				t.Helper()
				keys, err := ops.ListKeys(ctx, tenant)
				if err != nil {
					t.Fatal(err)
				}
				rot, err := ops.KeyRotation(ctx)
				if err != nil {
					t.Fatal(err)
				}
				return state{keys, rot.Job}
			}

			before, earlier := snapshot(), len(f.events(t))
			for _, fc := range forgeries {
				status, body := send(t, f.srv.Client(), f.srv.URL+path, "POST", call.body, fc.header...)
				var got struct{ Reason string }
				_ = jsonUnmarshal(body, &got)
				if status != fc.status || got.Reason != fc.reason {
					t.Errorf("%s: got %d %s, want %d %s", fc.name, status, body, fc.status, fc.reason)
				}
			}
			if after := snapshot(); !reflect.DeepEqual(after, before) {
				t.Fatalf("forged calls changed the keystore:\n%+v\nwant\n%+v", after, before)
			}

			// Each forgery is on record as a refusal; none as a request or a change.
			refused := map[string]int{}
			for _, e := range f.events(t)[earlier:] {
				switch {
				case e.Details["path"] != path:
					t.Errorf("a forged call recorded under %s %s", e.Details["method"], e.Details["path"])
				case e.Outcome != "deny":
					t.Errorf("a forged call recorded as %s %s", e.Type, e.Outcome)
				case e.Tenant != tenant:
					t.Errorf("a forged call filed under tenant %q, want %q, whose admins must see it", e.Tenant, tenant)
				default:
					refused[e.Reason]++
					if e.Reason != "unauthenticated" && (e.Type != audit.TypeAdminDeny || e.Actor.Kind != "anonymous") {
						t.Errorf("forgery recorded as %s by %+v, want admin.deny by anonymous", e.Type, e.Actor)
					}
				}
			}
			want := map[string]int{}
			for _, fc := range forgeries {
				want[fc.reason]++
			}
			if !reflect.DeepEqual(refused, want) {
				t.Errorf("refusals on record by reason: got %v, want %v", refused, want)
			}

			// Made properly (the CLI's headers, and those a same-origin page would add), it works.
			status, body := send(t, f.srv.Client(), f.srv.URL+path, "POST", call.body,
				"Authorization", bearer, "Content-Type", appJSON+"; charset=utf-8", "Origin", f.srv.URL, "Sec-Fetch-Site", "same-origin")
			if status != call.status {
				t.Fatalf("made properly: got %d %s, want %d", status, body, call.status)
			}
			switch call.name {
			case "verify it":
				<-f.checked
			case "activate it":
				if k, _ := ops.GetKey(ctx, tenant, k1.ID); k.State != keystore.StateVerified {
					t.Fatalf("the previously active key is %s after the activate, want verified", k.State)
				}
			case "start a tenant rotation":
				waitRotation(t, ops, tenant)
			}
			f.scan(t)
		})
	}
}

// A forged call whose refusal cannot be recorded is answered 503 audit_unavailable, as every
// unrecorded refusal is.
func TestAdminForgedCallUnrecordedIs503(t *testing.T) {
	f := newKeysFixture(t)
	f.al.Close()
	for _, header := range [][]string{
		{"Authorization", "Bearer " + adminToken, "Content-Type", "application/json", "Origin", "https://evil.example"},
		{"Authorization", "Bearer " + adminToken, "Content-Type", "text/plain"},
	} {
		status, body := send(t, f.srv.Client(), f.srv.URL+"/v1/tenants/org_acme/rotate-keys", "POST", "", header...)
		if status != 503 || !strings.Contains(body, "audit_unavailable") {
			t.Errorf("%v: got %d %s, want 503 audit_unavailable", header, status, body)
		}
	}
}

func addKey(secret string) admin.AddKeyRequest {
	return admin.AddKeyRequest{Provider: "openai", Secret: secret}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func jsonDecode(resp *http.Response, v any) error { return json.NewDecoder(resp.Body).Decode(v) }
