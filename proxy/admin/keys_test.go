package admin_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/proxy/authn"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
	"github.com/moltgate/moltgate/registry"
	"github.com/moltgate/moltgate/store"
)

// Test secrets: none of them may appear in anything the API, its logs, audit or metrics show.
const (
	oldKey     = "sk-test-OLDKEY-0123456789abcdefghij-wxyz"
	newKey     = "sk-test-NEWKEY-9876543210zyxwvutsrq-abcd"
	badKey     = "sk-test-BADKEY-deadbeefdeadbeefdead-0000"
	discordBot = "discord-bot-token-SECRETSECRETSECRET-7777"
)

var testSecrets = []string{oldKey, newKey, badKey, discordBot}

// recordingTransport keeps every response body the admin API sent.
type recordingTransport struct {
	next   http.RoundTripper
	mu     sync.Mutex
	bodies bytes.Buffer
}

func (rt *recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := rt.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	rt.mu.Lock()
	for k, v := range resp.Header {
		rt.bodies.WriteString(k + ": " + strings.Join(v, ",") + "\n")
	}
	rt.bodies.Write(body)
	rt.bodies.WriteByte('\n')
	rt.mu.Unlock()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

type keysFixture struct {
	srv      *httptest.Server
	clerk    *clerktest.Server
	rt       *recordingTransport
	logs     *testenv.LogBuffer
	metrics  *prometheus.Registry
	auditDir string
	al       *audit.FileLog
	keys     *keystore.Keys
	checked  chan string // Authorization headers the provider stand-in received
	secrets  int         // keys added by addKey
	// startRotator starts the rotator (at once, unless keysOptions.holdRotator). The test's
	// goroutine calls it.
	startRotator func()
}

func newKeysFixture(t *testing.T, opts ...func(*admin.Config, *admin.Deps)) *keysFixture {
	return newKeysFixtureWith(t, keysOptions{}, opts...)
}

// keysOptions vary the keys fixture beyond the admin API's Config and Deps.
type keysOptions struct {
	// holdRotator leaves the rotator stopped until startRotator is called.
	holdRotator bool
}

// withLimits gives the admin API write budgets.
func withLimits(l admin.Limits) func(*admin.Config, *admin.Deps) {
	return func(_ *admin.Config, d *admin.Deps) { d.Limits = l }
}

func newKeysFixtureWith(t *testing.T, ko keysOptions, opts ...func(*admin.Config, *admin.Deps)) *keysFixture {
	t.Helper()
	f := &keysFixture{clerk: clerktest.New(t), logs: &testenv.LogBuffer{}, metrics: prometheus.NewRegistry(),
		auditDir: filepath.Join(t.TempDir(), "audit"), checked: make(chan string, 64)}
	logger := slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	// The provider stand-in: a loopback API that accepts the good keys only.
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		f.checked <- h
		switch h {
		case "Bearer " + oldKey, "Bearer " + newKey, "Bot " + discordBot:
			w.Write([]byte(`{"data":[]}`))
		default:
			http.Error(w, `{"error":"invalid api key"}`, http.StatusUnauthorized)
		}
	}))
	t.Cleanup(provider.Close)

	engine, err := policies.New(t.Context(), policies.Config{Timeout: testDecisionTimeout}, logger, f.metrics)
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
	src := keystore.FileSource{Path: filepath.Join(t.TempDir(), "keyring")}
	if err := os.WriteFile(src.Path, []byte("1:"+hex.EncodeToString(bytes.Repeat([]byte{7}, 32))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	versions, err := src.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ring, err := keystore.NewKeyringFrom(versions)
	if err != nil {
		t.Fatal(err)
	}
	ks := keystore.NewWithSalts(ring, kv)
	reg, err := registry.New(t.Context(), kv, ks, engine, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.al, err = audit.OpenFile(audit.FileConfig{Dir: f.auditDir}, logger); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.al.Close() })
	f.keys, err = keystore.NewKeys(keystore.KeysConfig{Keystore: ks, KV: kv, Audit: f.al, Verifier: &keystore.HTTPVerifier{
		Client: provider.Client(),
		Endpoints: map[string]keystore.Endpoint{
			"openai":  {URL: provider.URL + "/v1/models", Header: "Authorization", Prefix: "Bearer "},
			"discord": {URL: provider.URL + "/api/v10/users/@me", Header: "Authorization", Prefix: "Bot "},
		}}})
	if err != nil {
		t.Fatal(err)
	}
	rot, err := keystore.NewRotator(keystore.RotatorConfig{Keystore: ks, KV: kv, Source: src, Logger: logger,
		Targets: []keystore.Target{f.keys, reg}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	started := false
	f.startRotator = func() {
		if !started {
			started = true
			go func() { defer close(done); rot.Run(ctx) }()
		}
	}
	t.Cleanup(func() {
		stop()
		if started {
			<-done
		}
	})
	if !ko.holdRotator {
		f.startRotator()
	}

	clerk, err := authn.NewClerk(authn.ClerkConfig{APIURL: f.clerk.URL, SecretKey: f.clerk.SecretKey(), Issuer: f.clerk.Issuer(),
		AuthorizedParties: []string{clerktest.DefaultAuthorizedParty}}, logger, f.metrics)
	if err != nil {
		t.Fatal(err)
	}
	cfg := admin.Config{AdminToken: []byte(adminToken)}
	deps := admin.Deps{Registry: reg, Policy: engine, Sessions: clerk, Audit: f.al, Logger: logger, Keys: f.keys, Rotator: rot,
		Metrics: f.metrics}
	for _, o := range opts {
		o(&cfg, &deps)
	}
	s, err := admin.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(listener(s))
	t.Cleanup(f.srv.Close)
	f.rt = &recordingTransport{next: f.srv.Client().Transport}
	return f
}

func (f *keysFixture) client(cred string) *admin.Client {
	return &admin.Client{BaseURL: f.srv.URL, Token: cred, HTTP: &http.Client{Transport: f.rt}}
}

// orgUser is a Clerk session of a user acting in organization org with role ("admin", "member").
func (f *keysFixture) orgUser(sub, org, role string) *admin.Client {
	return f.client(f.clerk.Mint(clerktest.Claims{Subject: sub, Org: &clerktest.Org{ID: org, Slug: org, Role: role}}))
}

// scan fails the test if any test secret appears in a response, log line, audit event or
// metric the test produced.
func (f *keysFixture) scan(t *testing.T) {
	t.Helper()
	var out strings.Builder
	f.rt.mu.Lock()
	out.Write(f.rt.bodies.Bytes())
	f.rt.mu.Unlock()
	out.WriteString(f.logs.String())
	entries, err := os.ReadDir(f.auditDir)
	if err != nil || len(entries) == 0 {
		t.Fatalf("audit dir: %v, %d files", err, len(entries))
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(f.auditDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out.Write(b)
	}
	mfs, err := f.metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		out.WriteString(mf.String()) // names, help, label values and values
	}
	all := out.String()
	if len(all) < 1000 {
		t.Fatalf("scanned only %d bytes: the scan saw nothing", len(all))
	}
	for _, s := range testSecrets {
		for _, form := range []string{s, hex.EncodeToString([]byte(s)), s[:len(s)/2]} {
			if strings.Contains(all, form) {
				t.Errorf("test secret found in output (form %d chars)", len(form))
			}
		}
	}
}

func (f *keysFixture) events(t *testing.T) []audit.Event {
	t.Helper()
	if err := f.al.Sync(); err != nil {
		t.Fatal(err)
	}
	return (&fixture{auditDir: f.auditDir}).events(t)
}

func TestAdminKeyLifecycle(t *testing.T) {
	f := newKeysFixture(t)
	ctx := t.Context()
	const tenant = "org_acme"
	owner := f.orgUser("user_alice", tenant, "admin")

	// Add: stored sealed, shown as provider, last four and fingerprint.
	k1, err := owner.AddKey(ctx, tenant, admin.AddKeyRequest{Provider: "openai", Secret: oldKey, Label: "old",
		Scope: []string{"models/gpt-*"}, MonthlySpendCapCents: 5000})
	if err != nil {
		t.Fatal(err)
	}
	if k1.Provider != "openai" || k1.Last4 != "wxyz" || len(k1.Fingerprint) != 16 || k1.State != keystore.StateAdded ||
		k1.MonthlySpendCapCents != 5000 || len(k1.Scope) != 1 {
		t.Fatalf("add: %+v", k1)
	}
	// A key cannot be activated before the provider accepted it.
	_, err = owner.ActivateKey(ctx, tenant, k1.ID)
	wantAPIError(t, err, 409, "key_state")

	if k1, err = owner.VerifyKey(ctx, tenant, k1.ID); err != nil || k1.State != keystore.StateVerified {
		t.Fatalf("verify: %+v %v", k1, err)
	}
	if h := <-f.checked; h != "Bearer "+oldKey {
		t.Fatal("the provider stand-in did not receive the key")
	}
	if k1, err = owner.ActivateKey(ctx, tenant, k1.ID); err != nil || k1.State != keystore.StateActive {
		t.Fatalf("activate: %+v %v", k1, err)
	}

	// Zero-downtime provider key rotation: add new, verify, switch, revoke old.
	k2, err := owner.AddKey(ctx, tenant, admin.AddKeyRequest{Provider: "openai", Secret: newKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = owner.VerifyKey(ctx, tenant, k2.ID); err != nil {
		t.Fatal(err)
	}
	<-f.checked
	if _, err = owner.ActivateKey(ctx, tenant, k2.ID); err != nil {
		t.Fatal(err)
	}
	if k1, err = owner.GetKey(ctx, tenant, k1.ID); err != nil || k1.State != keystore.StateVerified {
		t.Fatalf("previous key after switch: %+v %v", k1, err)
	}
	_, err = owner.RevokeKey(ctx, tenant, k2.ID, false)
	wantAPIError(t, err, 409, "key_state")
	if k1, err = owner.RevokeKey(ctx, tenant, k1.ID, false); err != nil || k1.State != keystore.StateRevoked {
		t.Fatalf("revoke old: %+v %v", k1, err)
	}

	// A key the provider refuses stays unverified.
	kb, err := owner.AddKey(ctx, tenant, admin.AddKeyRequest{Provider: "openai", Secret: badKey})
	if err != nil {
		t.Fatal(err)
	}
	_, err = owner.VerifyKey(ctx, tenant, kb.ID)
	wantAPIError(t, err, 422, "key_rejected")
	<-f.checked
	if kb, _ = owner.GetKey(ctx, tenant, kb.ID); kb.State != keystore.StateAdded {
		t.Fatalf("rejected key: %+v", kb)
	}

	// Channel credentials are the same records.
	kd, err := owner.AddKey(ctx, tenant, admin.AddKeyRequest{Provider: "discord", Kind: keystore.KindChannelCredential, Secret: discordBot})
	if err != nil {
		t.Fatal(err)
	}
	if kd, err = owner.VerifyKey(ctx, tenant, kd.ID); err != nil || kd.Kind != keystore.KindChannelCredential {
		t.Fatalf("channel credential: %+v %v", kd, err)
	}
	<-f.checked

	// Bad input: a clear error, nothing stored, the secret not echoed.
	before, _ := owner.ListKeys(ctx, tenant)
	for _, req := range []admin.AddKeyRequest{
		{Provider: "Open AI!", Secret: newKey},
		{Provider: "openai", Secret: "short"},
		{Provider: "openai", Secret: newKey, Scope: []string{"bad scope"}},
		{Provider: "openai", Secret: newKey, MonthlySpendCapCents: -1},
		{Provider: "openai", Kind: "password", Secret: newKey},
	} {
		_, err := owner.AddKey(ctx, tenant, req)
		wantAPIError(t, err, 400, "invalid")
	}
	if after, _ := owner.ListKeys(ctx, tenant); len(after) != len(before) || len(before) != 4 {
		t.Fatalf("refused adds changed the store: %d keys before, %d after", len(before), len(after))
	}
	_, err = owner.GetKey(ctx, tenant, "k_0000000000000000")
	wantAPIError(t, err, 404, "unknown_key")

	// Policy: only the tenant's org admins (and platform admins, the admin token).
	_, err = f.orgUser("user_bob", tenant, "member").ListKeys(ctx, tenant)
	wantAPIError(t, err, 403, "tenant_admin_only")
	_, err = f.orgUser("user_eve", "org_other", "admin").AddKey(ctx, tenant, admin.AddKeyRequest{Provider: "openai", Secret: badKey})
	wantAPIError(t, err, 403, "tenant_admin_only")
	_, err = f.client("").ListKeys(ctx, tenant)
	wantAPIError(t, err, 401, "unauthenticated")
	if list, err := f.client(adminToken).ListKeys(ctx, tenant); err != nil || len(list) != 4 {
		t.Fatalf("admin token list: %d %v", len(list), err)
	}
	_, err = owner.RotateMaster(ctx)
	wantAPIError(t, err, 403, "platform_admin_only")

	// Rotation through the API: master, then the tenant's keys; the active key still opens.
	ops := f.client(adminToken)
	if _, err := ops.RotateMaster(ctx); err != nil {
		t.Fatal(err)
	}
	rot := waitRotation(t, ops, "")
	// Three keys and the tenant's fingerprint key.
	if rot.Job.Kind != "master" || rot.Job.Master != 2 || rot.Usage.Master[1] != 0 || rot.Usage.Master[2] != 4 {
		t.Fatalf("master rotation: %+v", rot)
	}
	// ?usage=0 answers the job without counting records.
	req, _ := http.NewRequestWithContext(ctx, "GET", f.srv.URL+"/v1/keystore/rotation?usage=0", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var jobOnly admin.Rotation
	err = json.NewDecoder(resp.Body).Decode(&jobOnly)
	resp.Body.Close()
	if err != nil || jobOnly.Job == nil || jobOnly.Job.Master != rot.Job.Master || jobOnly.Job.Phase != "done" || jobOnly.Usage.Total != 0 || rot.Usage.Total == 0 {
		t.Fatalf("?usage=0: %+v, %v; want the job %+v without counts", jobOnly, err, rot.Job)
	}
	if _, err := owner.RotateTenantKeys(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	if rot = waitRotation(t, ops, tenant); rot.Job.Kind != "tenant" || rot.Usage.Salts[tenant][2] != 4 {
		t.Fatalf("tenant rotation: %+v", rot)
	}
	o, err := keystore.NewOpener(f.keys, audit.Actor{Kind: "service", ID: "proxy"}, keystore.ReasonUpstreamCredential, f.al)
	if err != nil {
		t.Fatal(err)
	}
	active, secret, err := o.OpenActive(ctx, tenant, "openai")
	if err != nil || active.ID != k2.ID || string(secret) != newKey {
		t.Fatalf("active key after rotations: %+v %v", active, err)
	}

	// Audit: every change, every refusal, every open of a secret (who, which record, why).
	var changes, opens, denies int
	for _, e := range f.events(t) {
		switch {
		case e.Type == audit.TypeAdminChange && strings.HasPrefix(e.Action, "admin.key"):
			changes++
		case e.Type == keystore.EventSecretOpen:
			opens++
			if e.Details["record"] == "" || e.Details["purpose"] == "" || e.Actor.ID == "" {
				t.Errorf("secret.open event without who, record or why: %+v", e)
			}
		case e.Type == audit.TypeAdminDeny && strings.HasPrefix(e.Action, "admin.key"):
			denies++
		}
	}
	// 4 adds, 4 verifies (3 accepted), 2 activates, 1 revoke, 2 rotations = 12 successful changes;
	// 4 verify opens and 1 upstream-credential open; 12 refusals above (the anonymous call is
	// an authn failure).
	if changes != 12 || opens != 5 || denies != 12 {
		t.Fatalf("audit: %d changes, %d opens, %d denials; want 12, 5, 12", changes, opens, denies)
	}
	f.scan(t)
}

// waitRotation waits (deadline 30 s) for tenant's rotation ("": the master key's) to finish.
func waitRotation(t *testing.T, c *admin.Client, tenant string) admin.Rotation {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	rot, err := c.WaitRotation(ctx, tenant, 20*time.Millisecond)
	if err != nil {
		t.Fatalf("rotation not done: %v (%+v)", err, rot)
	}
	return rot
}
