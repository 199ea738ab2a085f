package main_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/store"
)

// keysConfig is a serve configuration with the master keys in a keyring file and the openai
// key check pointed at a loopback stand-in.
const keysConfig = `
listen: "@LISTEN@"
admin_listen: "@ADMIN@"
data_dir: "%s"
admin_token: {file: "@ADMINTOKEN@"}
keystore:
  source: file
  file: "%s"
  verify_urls:
    openai: "%s/v1/models"
`

func keySecret(i int) string { return fmt.Sprintf("sk-e2e-%04d-TOPSECRETVALUE-%08x", i, i*2654435761) }

// TestKeysEndToEnd drives the key lifecycle through the CLI of the built binary, then kills
// `moltgate serve` (SIGKILL) at random points of master key rotations and restarts it: after
// every kill the server starts (every gateway token opens), every key verifies (opens to the
// value the provider stand-in expects), and the last run retires the old master versions.
// Everything the runs printed, logged, audited and exported as metrics is scanned for the
// secrets.
func TestKeysEndToEnd(t *testing.T) {
	good := map[string]bool{}
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if good[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")] {
			w.Write([]byte(`{"data":[]}`))
			return
		}
		http.Error(w, "bad key", http.StatusUnauthorized)
	}))
	defer provider.Close()
	const nKeys = 200
	for i := range nKeys + 1 {
		good[keySecret(i)] = true
	}

	dir := t.TempDir()
	dataDir, keyring := filepath.Join(dir, "data"), filepath.Join(dir, "keyring")
	if err := os.WriteFile(keyring, []byte("1:"+hex.EncodeToString(bytes.Repeat([]byte{3}, 32))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(keysConfig, dataDir, keyring, provider.URL)
	var output strings.Builder // CLI output, for the secret scan
	mg := startMoltgate(t, config)

	// The CLI: add (secret from a file), verify, activate, list.
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(keySecret(nKeys)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := mg.cli(t, "keys", "add", "--tenant", "org_e2e", "--provider", "openai", "--secret-file", secretFile,
		"--scope", "models/*", "--spend-cap-cents", "2500", "--json")
	output.WriteString(out)
	var k keystore.APIKey
	if err := json.Unmarshal([]byte(out), &k); err != nil || k.Last4 != keySecret(nKeys)[len(keySecret(nKeys))-4:] {
		t.Fatalf("keys add: %v\n%s", err, out)
	}
	for _, verb := range []string{"verify", "activate"} {
		output.WriteString(mg.cli(t, "keys", verb, "--tenant", "org_e2e", k.ID))
	}
	out = mg.cli(t, "keys", "list", "--tenant", "org_e2e")
	output.WriteString(out)
	if !strings.Contains(out, k.ID) || !strings.Contains(out, "active") || !strings.Contains(out, "25.00/month") {
		t.Fatalf("keys list:\n%s", out)
	}

	// Many records, so kills land in the middle of re-encryption.
	c := mg.admin()
	ids := map[string]string{k.ID: "org_e2e"}
	for i := range nKeys {
		tenant := fmt.Sprintf("org_t%d", i%5)
		k, err := c.AddKey(t.Context(), tenant, admin.AddKeyRequest{Provider: "openai", Secret: keySecret(i)})
		if err != nil {
			t.Fatal(err)
		}
		ids[k.ID] = tenant
	}
	for i := range 4 {
		if _, err := c.Create(t.Context(), admin.CreateRequest{ID: fmt.Sprintf("gw%d", i), Tenant: fmt.Sprintf("org_t%d", i),
			Owner: "user_1", Upstream: "http://127.0.0.1:1"}); err != nil {
			t.Fatal(err)
		}
	}

	// Whole rotations, timed, so the kills below can be spread over the length of one (the
	// shortest seen: the first is slower, with cold caches).
	length := time.Hour
	for range 3 {
		if _, err := c.RotateMaster(t.Context()); err != nil {
			t.Fatal(err)
		}
		whole := waitDone(t, c)
		length = min(length, max(whole.Job.Finished.Sub(whole.Job.Started), time.Millisecond))
	}

	seed := rand.Uint64()
	// The sealed records: nKeys keys and org_e2e's, 4 gateway tokens, the audit checkpoint
	// key, and the fingerprint keys of the 6 tenants with keys.
	const records = nKeys + 1 + 4 + 1 + 6
	t.Logf("a rotation of %d records takes %v; kill delays seeded with %d", records, length, seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	midway, runs := 0, 0
	for ; midway < 3 && runs < 20; runs++ {
		if _, err := c.RotateMaster(t.Context()); err != nil {
			t.Fatalf("run %d: rotate-master: %v", runs, err)
		}
		time.Sleep(time.Duration(rng.Int64N(int64(length))))
		mg.cmd.Process.Kill()
		mg.cmd.Wait()
		collectFile(t, &output, mg.logPath)
		if job := storedJob(t, filepath.Join(dataDir, "moltgate.db")); job.Phase != "done" {
			midway++
		} else {
			length = max(length*2/3, time.Millisecond) // rotations got faster: aim earlier
		}

		mg = startMoltgate(t, config) // fails the test if any gateway token does not open
		c = mg.admin()
		for id, tenant := range ids {
			if _, err := c.VerifyKey(t.Context(), tenant, id); err != nil {
				t.Fatalf("run %d: key %s/%s after the kill: %v", runs, tenant, id, err)
			}
		}
	}
	if midway < 3 {
		t.Fatalf("only %d of %d kills landed mid-rotation; the test did not test", midway, runs)
	}
	t.Logf("%d of %d kills landed mid-rotation", midway, runs)
	out = mg.cli(t, "keys", "rotate-master", "--wait")
	output.WriteString(out)
	rot, err := c.KeyRotation(t.Context())
	if err != nil || rot.Job == nil || rot.Job.Phase != "done" || len(rot.Usage.Master) != 1 || rot.Usage.Master[rot.Job.Master] != records {
		t.Fatalf("after the last rotation: %+v %v\n%s", rot, err, out)
	}
	versions, err := keystore.FileSource{Path: keyring}.Load(t.Context())
	if err != nil || len(versions) != 1 || versions[rot.Job.Master] == nil {
		t.Fatalf("keyring file after retirement: %d versions, %v", len(versions), err)
	}
	t.Logf("master version %d at the end", rot.Job.Master)

	// The scan: CLI output, the metrics, every log line, every audit event.
	resp, err := http.Get(mg.adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !strings.Contains(string(metrics), "moltgate_") {
		t.Fatalf("metrics: %v\n%.300s", err, metrics)
	}
	output.Write(metrics)
	collectFile(t, &output, mg.logPath)
	filepath.WalkDir(filepath.Join(dataDir, "audit"), func(path string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			collectFile(t, &output, path)
		}
		return nil
	})
	all := output.String()
	if !strings.Contains(all, "secret.open") || !strings.Contains(all, "keys.open") {
		t.Fatal("the scan saw no audited secret opens: it is not looking at the audit files")
	}
	for i := range nKeys + 1 {
		if s := keySecret(i); strings.Contains(all, s) || strings.Contains(all, s[:len(s)/2]) {
			t.Fatalf("secret %d found in output, logs or audit", i)
		}
	}
}

func collectFile(t *testing.T, w *strings.Builder, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	w.Write(b)
}

// waitDone waits (deadline 60 s) for the master key rotation to finish.
func waitDone(t *testing.T, c *admin.Client) admin.Rotation {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	rot, err := c.WaitRotation(ctx, "", 20*time.Millisecond)
	if err != nil {
		t.Fatalf("rotation not done: %v (%+v)", err, rot.Job)
	}
	return rot
}

// storedJob reads the rotation job a killed server left in its store.
func storedJob(t *testing.T, path string) keystore.Job {
	t.Helper()
	kv, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	var j keystore.Job
	v, err := kv.Get("keystore.rotation", "job")
	if err != nil || json.Unmarshal(v, &j) != nil {
		t.Fatalf("rotation job record: %v", err)
	}
	return j
}
