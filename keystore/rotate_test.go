package keystore_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/registry"
	"github.com/moltgate/moltgate/store"
)

type nopSyncer struct{}

func (nopSyncer) PutGateway(context.Context, registry.Gateway) error { return nil }
func (nopSyncer) DeleteGateway(context.Context, string) error        { return nil }

type nopAudit struct{ n atomic.Int64 }

func (a *nopAudit) Emit(context.Context, audit.Event) error { a.n.Add(1); return nil }

type kvStore interface {
	keystore.KV
	Close() error
}

// world is everything the keystore covers, on one store: key records and gateway tokens.
type world struct {
	kv     keystore.KV
	source keystore.FileSource
	ks     *keystore.Keystore
	keys   *keystore.Keys
	reg    *registry.Registry
	rot    *keystore.Rotator
	audit  *nopAudit
}

// openWorld loads the keyring file and builds keystore, keys, registry and rotator over kv.
func openWorld(t testing.TB, kv keystore.KV, keyring string, onReseal func(int)) *world {
	t.Helper()
	src := keystore.FileSource{Path: keyring}
	versions, err := src.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ring, err := keystore.NewKeyringFrom(versions)
	if err != nil {
		t.Fatal(err)
	}
	ks := keystore.NewWithSalts(ring, kv)
	w := &world{kv: kv, source: src, ks: ks, audit: &nopAudit{}}
	if w.keys, err = keystore.NewKeys(keystore.KeysConfig{Keystore: ks, KV: kv, Audit: w.audit}); err != nil {
		t.Fatal(err)
	}
	if w.reg, err = registry.New(context.Background(), kv, ks, nopSyncer{}, nil); err != nil {
		t.Fatal(err)
	}
	if w.rot, err = keystore.NewRotator(keystore.RotatorConfig{Keystore: ks, KV: kv, Source: src,
		Targets: []keystore.Target{w.keys, w.reg}, OnReseal: onReseal}); err != nil {
		t.Fatal(err)
	}
	return w
}

func writeKeyring(t testing.TB, dir string) string {
	path := filepath.Join(dir, "keyring")
	if err := os.WriteFile(path, []byte("1:"+hex.EncodeToString(bytes.Repeat([]byte{1}, 32))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func secretOf(tenant, i int) string { return fmt.Sprintf("sk-test-%02d-%04d-SECRETSECRET", tenant, i) }
func tokenOf(i int) string          { return fmt.Sprintf("%064x", 1000+i) }

// seed stores nKeys key records over 4 tenants and nGateways gateways.
func seed(t testing.TB, w *world, nKeys, nGateways int) map[string]string {
	t.Helper()
	want := map[string]string{} // "tenant/id" → secret
	for i := range nKeys {
		tenant := i % 4
		k, err := w.keys.Add(context.Background(), keystore.AddRequest{Tenant: fmt.Sprintf("tenant-%d", tenant),
			Provider: "openai", Secret: keystore.Secret(secretOf(tenant, i))})
		if err != nil {
			t.Fatal(err)
		}
		want[k.Tenant+"/"+k.ID] = secretOf(tenant, i)
	}
	for i := range nGateways {
		_, err := w.reg.Create(context.Background(), registry.Gateway{ID: fmt.Sprintf("gw%d", i), Tenant: fmt.Sprintf("tenant-%d", i%4),
			Owner: "user_1", Upstream: "http://127.0.0.1:1"}, tokenOf(i))
		if err != nil {
			t.Fatal(err)
		}
	}
	return want
}

// checkAll opens every record from the store through a fresh world (what a restarted process
// sees) and returns the master versions in use.
func checkAll(t testing.TB, kv keystore.KV, keyring string, want map[string]string, nGateways int) map[uint32]int {
	t.Helper()
	w := openWorld(t, kv, keyring, nil) // registry.New opens every gateway token or fails
	o, err := keystore.NewOpener(w.keys, audit.Actor{Kind: "service", ID: "test"}, keystore.ReasonProvision, w.audit)
	if err != nil {
		t.Fatal(err)
	}
	for name, secret := range want {
		tenant, id, _ := cut(name)
		got, err := o.Open(context.Background(), tenant, id)
		if err != nil || string(got) != secret {
			t.Fatalf("record %s: %v", name, err)
		}
	}
	for i := range nGateways {
		e, ok := w.reg.Lookup(fmt.Sprintf("gw%d", i))
		if !ok || string(e.Token) != tokenOf(i) {
			t.Fatalf("gateway gw%d: token lost", i)
		}
	}
	use, err := w.rot.Usage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tenants := map[string]bool{} // each tenant with keys has a sealed fingerprint key too
	for name := range want {
		tenant, _, _ := cut(name)
		tenants[tenant] = true
	}
	if use.Total != len(want)+nGateways+len(tenants) {
		t.Fatalf("records: got %d, want %d keys, %d gateway tokens and %d fingerprint keys",
			use.Total, len(want), nGateways, len(tenants))
	}
	return use.Master
}

func cut(s string) (string, string, bool) {
	for i := range len(s) {
		if s[i] == '/' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func TestRotateMasterWhileReading(t *testing.T) {
	for name, open := range keystore.Backends() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			kv := open(t)
			keyring := writeKeyring(t, t.TempDir())
			w := openWorld(t, kv, keyring, nil)
			want := seed(t, w, 60, 6)
			o, _ := keystore.NewOpener(w.keys, audit.Actor{Kind: "service", ID: "proxy"}, keystore.ReasonUpstreamCredential, w.audit)

			// Readers keep opening every record while the rotation runs: none may fail.
			ctx, stop := context.WithCancel(t.Context())
			var wg sync.WaitGroup
			var reads atomic.Int64
			for range 3 {
				wg.Go(func() {
					for ctx.Err() == nil {
						for name, secret := range want {
							tenant, id, _ := cut(name)
							got, err := o.Open(context.Background(), tenant, id)
							if err != nil || string(got) != secret {
								t.Errorf("read during rotation: %s: %v", name, err)
								return
							}
							reads.Add(1)
						}
					}
				})
			}
			job, err := w.rot.StartMaster(t.Context())
			if err != nil || job.Master != 2 {
				t.Fatalf("start: %+v, %v", job, err)
			}
			job, err = w.rot.RunJob(t.Context(), "")
			stop()
			wg.Wait()
			if err != nil {
				t.Fatal(err)
			}
			// 60 keys, 6 gateway tokens and the fingerprint keys of 4 tenants.
			if job.Phase != "done" || job.Resealed != 70 || fmt.Sprint(job.Retired) != "[1]" {
				t.Fatalf("job: got %+v, want done, 70 resealed, [1] retired", job)
			}
			if reads.Load() == 0 {
				t.Fatal("no reads ran during rotation")
			}
			if use := checkAll(t, kv, keyring, want, 6); len(use) != 1 || use[2] != 70 {
				t.Fatalf("versions in use: got %v, want only 2", use)
			}
			if v, _ := w.source.Load(t.Context()); len(v) != 1 || v[2] == nil {
				t.Fatal("keyring file still holds the retired version")
			}

			// Per-tenant rotation: only tenant-1's records change, and its old salt retires.
			job, err = w.rot.StartTenant(t.Context(), "tenant-1")
			if err != nil {
				t.Fatal(err)
			}
			if job, err = w.rot.RunJob(t.Context(), "tenant-1"); err != nil || job.Resealed != 15+2+1 {
				t.Fatalf("tenant job: %+v, %v (want 18 resealed: 15 keys, 2 gateways, the fingerprint key)", job, err)
			}
			use, _ := w.rot.Usage(t.Context())
			if fmt.Sprint(use.Salts["tenant-1"]) != "map[2:18]" || fmt.Sprint(use.Salts["tenant-0"]) != "map[1:18]" {
				t.Fatalf("salts in use: got %v", use.Salts)
			}
			if ts, _ := w.ks.TenantSalts("tenant-1"); len(ts.Versions) != 1 {
				t.Fatalf("tenant-1 old salt not retired: %v", ts.Versions)
			}
			checkAll(t, kv, keyring, want, 6)
		})
	}
}

func TestRotateRefusesSecondKind(t *testing.T) {
	b, err := store.OpenBolt(filepath.Join(t.TempDir(), "kv.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	w := openWorld(t, b, writeKeyring(t, t.TempDir()), nil)
	seed(t, w, 4, 0)
	if _, err := w.rot.StartMaster(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := w.rot.StartTenant(t.Context(), "tenant-0"); !errors.Is(err, keystore.ErrRotationBusy) {
		t.Fatalf("tenant rotation during master rotation: got %v, want ErrRotationBusy", err)
	}
	// A second rotate-master resumes the unfinished one instead of adding a version.
	if j, err := w.rot.StartMaster(t.Context()); err != nil || j.Master != 2 {
		t.Fatalf("restart: %+v, %v", j, err)
	}
}

// hookKV runs a function once, the next time a key record is read, after the read: the
// reader holds the record as it was before whatever the function does.
type hookKV struct {
	keystore.KV
	hook atomic.Pointer[func()]
}

func (h *hookKV) Get(bucket, key string) ([]byte, error) {
	v, err := h.KV.Get(bucket, key)
	if bucket == "keystore.keys" {
		if fn := h.hook.Swap(nil); fn != nil {
			(*fn)()
		}
	}
	return v, err
}

// TestOpenAcrossRetirement is the interleaving behind an intermittent failure of
// TestRotateMasterWhileReading: a reader loads a record sealed under master version 1, then a
// whole rotation re-encrypts it and retires version 1, then the reader decrypts what it
// loaded. The open must still succeed (from the record as stored now).
func TestOpenAcrossRetirement(t *testing.T) {
	for name, open := range keystore.Backends() {
		t.Run(name, func(t *testing.T) {
			kv := &hookKV{KV: open(t)}
			w := openWorld(t, kv, writeKeyring(t, t.TempDir()), nil)
			want := seed(t, w, 4, 1)
			o, err := keystore.NewOpener(w.keys, audit.Actor{Kind: "service", ID: "proxy"}, keystore.ReasonUpstreamCredential, w.audit)
			if err != nil {
				t.Fatal(err)
			}
			var job keystore.Job
			var rerr error
			rotate := func() {
				if _, rerr = w.rot.StartMaster(context.Background()); rerr == nil {
					job, rerr = w.rot.RunJob(context.Background(), "")
				}
			}
			kv.hook.Store(&rotate)
			for name, secret := range want {
				tenant, id, _ := cut(name)
				got, err := o.Open(t.Context(), tenant, id)
				if err != nil || string(got) != secret {
					t.Fatalf("open %s across retirement: %v", name, err)
				}
				break
			}
			if rerr != nil || fmt.Sprint(job.Retired) != "[1]" {
				t.Fatalf("the rotation in between did not retire version 1: %+v, %v", job, rerr)
			}
		})
	}
}

// swapHookKV runs a function once, inside the next insert of a key record (a Swap from
// absent), before the insert is written: the secret is sealed but not stored yet.
type swapHookKV struct {
	keystore.KV
	hook atomic.Pointer[func()]
}

func (h *swapHookKV) Swap(bucket, key string, old, new []byte) error {
	if bucket == "keystore.keys" && old == nil {
		if fn := h.hook.Swap(nil); fn != nil {
			(*fn)()
		}
	}
	return h.KV.Swap(bucket, key, old, new)
}

// probe is a Target that reports when rotation reaches its quiesce step.
type probe struct{ quiescing chan struct{} }

func (probe) Reseal(context.Context, keystore.ResealFunc) error { return nil }
func (p probe) Quiesce()                                        { close(p.quiescing) }

// TestRotationWaitsForSealsInFlight is the converse interleaving: a key is sealed under master
// version 1, and before it is stored a whole master rotation runs. The rotation must not retire
// version 1 under it: after the insert lands, the key opens.
func TestRotationWaitsForSealsInFlight(t *testing.T) {
	kv := &swapHookKV{KV: keystore.Backends()["bolt"](t)}
	w := openWorld(t, kv, writeKeyring(t, t.TempDir()), nil)
	seed(t, w, 4, 1)
	p := probe{quiescing: make(chan struct{})}
	rot, err := keystore.NewRotator(keystore.RotatorConfig{Keystore: w.ks, KV: kv, Source: w.source,
		Targets: []keystore.Target{p, w.keys, w.reg}})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		job keystore.Job
		err error
	}
	done := make(chan result, 1)
	hook := func() { // inside Add, after its seal under version 1, before its insert
		go func() {
			j, err := rot.StartMaster(context.Background())
			if err == nil {
				j, err = rot.RunJob(context.Background(), "")
			}
			done <- result{j, err}
		}()
		select {
		case <-p.quiescing:
		case r := <-done:
			done <- r
			return
		case <-time.After(30 * time.Second):
			t.Error("rotation did not reach its quiesce step within 30s")
			return
		}
		// A rotation that does not wait for this insert finishes (and retires version 1) now;
		// a correct one cannot, so this wait ends at its deadline.
		select {
		case r := <-done:
			done <- r
		case <-time.After(300 * time.Millisecond):
		}
	}
	kv.hook.Store(&hook)
	const secret = "sk-test-inflight-0123456789-SECRET"
	k, err := w.keys.Add(t.Context(), keystore.AddRequest{Tenant: "tenant-0", Provider: "anthropic", Secret: keystore.Secret(secret)})
	if err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("rotation did not finish within 30s")
	}
	if r.err != nil || r.job.Phase != "done" {
		t.Fatalf("rotation: %+v, %v", r.job, r.err)
	}
	o, _ := keystore.NewOpener(w.keys, audit.Actor{Kind: "service", ID: "proxy"}, keystore.ReasonUpstreamCredential, w.audit)
	if got, err := o.Open(t.Context(), k.Tenant, k.ID); err != nil || string(got) != secret {
		t.Fatalf("key sealed during the rotation: %v (rotation retired %v)", err, r.job.Retired)
	}
	if use, _ := w.rot.Usage(t.Context()); use.Master[1] != 1 || len(r.job.Retired) != 0 {
		t.Fatalf("version 1 must stay, used by the key in flight: usage %v, retired %v", use.Master, r.job.Retired)
	}
}

// TestRotateReadOnlySource: with a source that cannot add versions (env), the operator adds
// the version where the keys are kept and restarts; rotate-master then re-encrypts every record
// to the newest loaded version and drops the old one from memory. With one version loaded it
// is a clear error that changes nothing.
func TestRotateReadOnlySource(t *testing.T) {
	kv := keystore.Backends()["bolt"](t)
	v1, v2 := keystore.Secret(bytes.Repeat([]byte{1}, 32)), keystore.Secret(bytes.Repeat([]byte{2}, 32))
	world := func(src keystore.StaticSource) (*keystore.Keys, *keystore.Rotator, *keystore.Keystore) {
		ring, err := keystore.NewKeyringFrom(src)
		if err != nil {
			t.Fatal(err)
		}
		ks := keystore.NewWithSalts(ring, kv)
		keys, err := keystore.NewKeys(keystore.KeysConfig{Keystore: ks, KV: kv, Audit: &nopAudit{}})
		if err != nil {
			t.Fatal(err)
		}
		rot, err := keystore.NewRotator(keystore.RotatorConfig{Keystore: ks, KV: kv, Source: src, Targets: []keystore.Target{keys}})
		if err != nil {
			t.Fatal(err)
		}
		return keys, rot, ks
	}
	keys, rot, _ := world(keystore.StaticSource{1: v1})
	var ids []string
	for i := range 5 {
		k, err := keys.Add(t.Context(), keystore.AddRequest{Tenant: "tenant-0", Provider: "openai", Secret: keystore.Secret(secretOf(0, i))})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, k.ID)
	}
	if _, err := rot.StartMaster(t.Context()); err == nil || !strings.Contains(err.Error(), "cannot add versions") {
		t.Fatalf("rotate with one read-only version: %v", err)
	}
	if _, ok, _ := rot.Job(""); ok {
		t.Fatal("a refused rotation left a job behind")
	}

	keys, rot, ks := world(keystore.StaticSource{1: v1, 2: v2}) // the restart with version 2 added
	if j, err := rot.StartMaster(t.Context()); err != nil || j.Master != 2 {
		t.Fatalf("start: %+v %v", j, err)
	}
	j, err := rot.RunJob(t.Context(), "")
	// Five keys and the tenant's fingerprint key.
	if err != nil || j.Resealed != 6 || fmt.Sprint(j.Retired) != "[1]" || fmt.Sprint(ks.Ring().Versions()) != "[2]" {
		t.Fatalf("job %+v, %v; loaded %v", j, err, ks.Ring().Versions())
	}
	o, _ := keystore.NewOpener(keys, audit.Actor{Kind: "service", ID: "proxy"}, keystore.ReasonUpstreamCredential, &nopAudit{})
	for i, id := range ids {
		if got, err := o.Open(t.Context(), "tenant-0", id); err != nil || string(got) != secretOf(0, i) {
			t.Fatalf("key %d after rotation: %v", i, err)
		}
	}
}

// A secret's fingerprint is the same whenever it is added: its tenant's fingerprint key is
// sealed like any record, so master and tenant rotations re-encrypt it without changing it.
// Another tenant's fingerprint of the same secret differs.
func TestFingerprintSurvivesRotation(t *testing.T) {
	kv := keystore.Backends()["bolt"](t)
	w := openWorld(t, kv, writeKeyring(t, t.TempDir()), nil)
	add := func(tenant string) keystore.APIKey {
		t.Helper()
		k, err := w.keys.Add(t.Context(), keystore.AddRequest{Tenant: tenant, Provider: "openai", Secret: keystore.Secret("sk-same-secret-0123456789")})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	first := add("tenant-a")
	if other := add("tenant-b"); other.Fingerprint == first.Fingerprint {
		t.Fatalf("two tenants share fingerprint %s", first.Fingerprint)
	}
	if _, err := w.rot.StartMaster(t.Context()); err != nil {
		t.Fatal(err)
	}
	if j, err := w.rot.RunJob(t.Context(), ""); err != nil || fmt.Sprint(j.Retired) != "[1]" {
		t.Fatalf("master rotation: %+v, %v", j, err)
	}
	if _, err := w.rot.StartTenant(t.Context(), "tenant-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.rot.RunJob(t.Context(), "tenant-a"); err != nil {
		t.Fatal(err)
	}
	if again := add("tenant-a"); again.Fingerprint != first.Fingerprint {
		t.Fatalf("after rotations: fingerprint %s, want %s as before", again.Fingerprint, first.Fingerprint)
	}
	// And a restarted process (a fresh keystore over the same store) agrees.
	w2 := openWorld(t, kv, w.source.Path, nil)
	k, err := w2.keys.Add(t.Context(), keystore.AddRequest{Tenant: "tenant-a", Provider: "openai", Secret: keystore.Secret("sk-same-secret-0123456789")})
	if err != nil || k.Fingerprint != first.Fingerprint {
		t.Fatalf("after a restart: %s, %v; want %s", k.Fingerprint, err, first.Fingerprint)
	}
}
