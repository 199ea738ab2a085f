package main_test

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/proxy/admin"
)

// TestKeysPolicyEndToEnd: `moltgate serve` with the example policy set of
// deploy/policy-examples/tenant-keys, which refuses tool calls unless the gateway's tenant has an
// active provider key with a spend cap. Keys added, activated and revoked through the admin
// API change the proxy's decisions at once, and a restarted server loads them at start.
func TestKeysPolicyEndToEnd(t *testing.T) {
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"data":[]}`))
	}))
	defer provider.Close()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"ok":true}`))
	}))
	defer upstream.Close()

	dir := t.TempDir()
	policyDir := filepath.Join(dir, "policies")
	if err := os.Mkdir(policyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"authz.rego", "spend_cap.rego"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "policy-examples", "tenant-keys", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(policyDir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dataDir, keyring := filepath.Join(dir, "data"), filepath.Join(dir, "keyring")
	if err := os.WriteFile(keyring, []byte("1:"+hex.EncodeToString(bytes.Repeat([]byte{5}, 32))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(keysConfig, dataDir, keyring, provider.URL) + "policies:\n  dir: \"" + policyDir + "\"\n"
	mg := startMoltgate(t, config)
	c := mg.admin()
	const tenant = "org_spend"
	gw, err := c.Create(t.Context(), admin.CreateRequest{ID: "gwcap", Tenant: tenant, Owner: "user_1", Upstream: upstream.URL})
	if err != nil {
		t.Fatal(err)
	}

	invoke := func(step string, mg *instance, status int, reason string) {
		t.Helper()
		got, body := postJSON(t, mg.proxyURL+"/tools/invoke", "gwcap.gw.localhost", gw.Token, `{"tool":"sessions_list","args":{}}`)
		if got != status || (reason != "" && !strings.Contains(body, reason)) {
			t.Fatalf("%s: %d %s, want %d %s", step, got, body, status, reason)
		}
	}
	invoke("no key", mg, http.StatusForbidden, "no_capped_key")

	k, err := c.AddKey(t.Context(), tenant, admin.AddKeyRequest{Provider: "openai", Secret: keySecret(1),
		Scope: []string{"models/*"}, MonthlySpendCapCents: 2500})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.VerifyKey(t.Context(), tenant, k.ID); err != nil {
		t.Fatal(err)
	}
	invoke("key verified, not active", mg, http.StatusForbidden, "no_capped_key")
	if _, err := c.ActivateKey(t.Context(), tenant, k.ID); err != nil {
		t.Fatal(err)
	}
	invoke("capped key active", mg, http.StatusOK, `"ok":true`)

	// A restart loads the keys at start.
	mg.cmd.Process.Kill()
	mg.cmd.Wait()
	mg = startMoltgate(t, config)
	c = mg.admin()
	invoke("after restart", mg, http.StatusOK, `"ok":true`)

	if _, err := c.RevokeKey(t.Context(), tenant, k.ID, true); err != nil {
		t.Fatal(err)
	}
	invoke("key revoked", mg, http.StatusForbidden, "no_capped_key")

	var logs strings.Builder
	collectFile(t, &logs, mg.logPath)
	if s := keySecret(1); strings.Contains(logs.String(), s) || strings.Contains(logs.String(), s[:len(s)/2]) {
		t.Fatal("secret in the log")
	}
}
