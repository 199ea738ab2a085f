package main_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/proxy/admin"
)

// TestReplicaKilledMidRotation is issue 11's "a replica SIGKILLed mid-rotation: another
// finishes it, and every record opens". Three replicas built with the failpoints stall a
// rotation run at its 64th re-encrypted record, its lease still renewed: the replica that
// takes the master key rotation stalls there and is SIGKILLed. Another takes the job over
// once the lease lapses (cluster.lease_ttl), with a greater fencing token, and finishes it;
// its run has fewer than 64 records left, so it does not stall. Then every API key opens (its
// check reaches the provider with its own value) and every gateway token opens (the proxy
// lets its holder through) on both surviving replicas, and the old master version is retired.
func TestReplicaKilledMidRotation(t *testing.T) {
	const tenants, keysPerTenant, gateways, stallAt = 4, 25, 3, 64
	const leaseTTL = 2 * time.Second
	rdb := testenv.RedisDurable(t)
	// The provider stand-in accepts exactly the keys added below: a key that opened to
	// anything else would be refused.
	secrets := map[string]bool{}
	for i := range tenants * keysPerTenant {
		secrets["Bearer "+keySecret(i)] = true
	}
	provider := func(w http.ResponseWriter, r *http.Request) {
		if !secrets[r.Header.Get("Authorization")] {
			http.Error(w, `{"error":"invalid key"}`, http.StatusUnauthorized)
			return
		}
		w.Write([]byte(`{"data":[]}`))
	}
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	t.Cleanup(upstream.Close)
	reps, _ := startReplicasWith(t, 3, rdb.Addr, replicaOptions{binary: failpointBinary(t), leaseTTL: leaseTTL, provider: provider,
		env: []string{fmt.Sprintf("MOLTGATE_FAILPOINT_ROTATION_STALL=%d", stallAt)}})

	// Records: a fingerprint key per tenant, the API keys, the gateway tokens; more than
	// stallAt before the gateway tokens, fewer than 2*stallAt in all.
	type key struct{ tenant, id string }
	var keys []key
	for i := range tenants * keysPerTenant {
		tenant := fmt.Sprintf("org_rot%d", i%tenants)
		k, err := reps[i%3].admin().AddKey(t.Context(), tenant, admin.AddKeyRequest{Provider: "openai", Secret: keySecret(i)})
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key{tenant, k.ID})
	}
	tokens := map[string]string{}
	for i := range gateways {
		id, token := fmt.Sprintf("gwrot%d", i), fmt.Sprintf("%064x", 0xfeed00+i)
		if _, err := reps[i].admin().Create(t.Context(), admin.CreateRequest{ID: id, Tenant: "org_rot0", Owner: "user_rot",
			Upstream: upstream.URL, Token: token}); err != nil {
			t.Fatal(err)
		}
		tokens[id] = token
	}

	if _, err := reps[0].admin().RotateMaster(t.Context()); err != nil {
		t.Fatal(err)
	}
	masterJob := func(in *instance) (keystore.Job, bool) {
		rot, err := in.admin().KeyRotation(t.Context())
		if err != nil {
			return keystore.Job{}, false
		}
		i := slices.IndexFunc(rot.Jobs, func(j keystore.Job) bool { return j.Kind == "master" })
		if i < 0 {
			return keystore.Job{}, false
		}
		return rot.Jobs[i], true
	}
	// The run that took the job stores its progress at the 64th record, then stalls.
	var stalled keystore.Job
	testenv.WaitUntil(t, "the rotation stalled mid-job", 30*time.Second, func() bool {
		j, ok := masterJob(reps[1])
		stalled = j
		return ok && j.Phase == "reencrypt" && j.Resealed == stallAt
	})
	holder := slices.IndexFunc(reps, func(in *instance) bool {
		return strings.Contains(stalled.Holder, fmt.Sprintf("-%d-", in.cmd.Process.Pid))
	})
	if holder < 0 || stalled.Fence == 0 {
		t.Fatalf("stalled job %+v: holder is no replica's, or no fencing token", stalled)
	}
	killed := reps[holder]
	killed.cmd.Process.Signal(syscall.SIGKILL)
	killed.cmd.Wait()
	survivors := slices.Delete(slices.Clone(reps), holder, holder+1)
	t.Logf("replica %d held the rotation (fence %d) and was killed mid-job", holder, stalled.Fence)

	var done keystore.Job
	testenv.WaitUntil(t, "another replica to finish the rotation", 60*time.Second, func() bool {
		j, ok := masterJob(survivors[0])
		done = j
		return ok && j.Phase == "done"
	})
	if done.Holder == stalled.Holder || done.Fence <= stalled.Fence || done.Error != "" {
		t.Fatalf("finished job %+v after %+v: want another holder, a greater fencing token, no error", done, stalled)
	}
	if !slices.Contains(done.Retired, 1) {
		t.Errorf("finished job retired %v, want master version 1", done.Retired)
	}
	rot, err := survivors[1].admin().KeyRotation(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := tenants*keysPerTenant + tenants + gateways; rot.Usage.Master[done.Master] < want || len(rot.Usage.Master) != 1 {
		t.Errorf("records per master version %v, want all (at least %d) under version %d", rot.Usage.Master, want, done.Master)
	}

	for i, in := range survivors {
		for _, k := range keys {
			if got, err := in.admin().VerifyKey(t.Context(), k.tenant, k.id); err != nil || got.State != keystore.StateVerified {
				t.Fatalf("survivor %d: key %s/%s after the rotation: %v, %v; want it verified", i, k.tenant, k.id, got.State, err)
			}
		}
		for id, token := range tokens {
			if status, reason, err := proxyGet(in, id, "/", token); err != nil || status != http.StatusOK {
				t.Fatalf("survivor %d: gateway %s with its token after the rotation: %d %q %v, want 200", i, id, status, reason, err)
			}
		}
	}
}
