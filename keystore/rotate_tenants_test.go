package keystore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/keystore"
)

// Issue 15: one tenant's unfinished rotation refused every other tenant's and the master key's
// (409 rotation_busy). Each tenant's rotation is now a job of its own.
func TestRotationJobsArePerTenant(t *testing.T) {
	for name, open := range keystore.Backends() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			kv := open(t)
			keyring := writeKeyring(t, t.TempDir())
			w := openWorld(t, kv, keyring, nil)
			want := seed(t, w, 40, 4)

			// Nothing runs the jobs yet: tenant-0's stays unfinished throughout the starts.
			a, err := w.rot.StartTenant(t.Context(), "tenant-0")
			if err != nil {
				t.Fatal(err)
			}
			b, err := w.rot.StartTenant(t.Context(), "tenant-1")
			if err != nil || b.Tenant != "tenant-1" || b.Salt != 2 {
				t.Fatalf("tenant-1 while tenant-0 rotates: got %+v, %v, want its own job at salt 2", b, err)
			}
			// A second start of a tenant that is rotating is the same rotation.
			if again, err := w.rot.StartTenant(t.Context(), "tenant-0"); err != nil || again.Salt != a.Salt || !again.Started.Equal(a.Started) {
				t.Fatalf("tenant-0 again: got %+v, %v, want its unfinished job %+v", again, err, a)
			}
			m, err := w.rot.StartMaster(t.Context())
			if err != nil || m.Master != 2 {
				t.Fatalf("master while tenants rotate: got %+v, %v, want a job to version 2", m, err)
			}
			// A tenant rotation asked for during a master rotation is still refused.
			if _, err := w.rot.StartTenant(t.Context(), "tenant-2"); !errors.Is(err, keystore.ErrRotationBusy) {
				t.Fatalf("tenant-2 during the master rotation: got %v, want ErrRotationBusy", err)
			}
			jobs, err := w.rot.Jobs()
			if err != nil || len(jobs) != 3 || jobs[0].Kind != "master" || jobs[1].Tenant != "tenant-0" || jobs[2].Tenant != "tenant-1" {
				t.Fatalf("jobs: got %+v, %v, want the master job, tenant-0's and tenant-1's", jobs, err)
			}

			// The jobs run in any order; each finishes, and together they leave every record
			// under master 2 and the new salts of the tenants that rotated.
			for _, tenant := range []string{"tenant-1", "", "tenant-0"} {
				j, err := w.rot.RunJob(t.Context(), tenant)
				if err != nil || j.Phase != "done" {
					t.Fatalf("job %q: got %+v, %v, want done", tenant, j, err)
				}
			}
			use := checkAll(t, kv, keyring, want, 4)
			if len(use) != 1 || use[2] == 0 {
				t.Fatalf("master versions in use: got %v, want only 2", use)
			}
			salts, _ := w.rot.Usage(t.Context())
			for tenant, wantSalt := range map[string]string{"tenant-0": "map[2:12]", "tenant-1": "map[2:12]", "tenant-2": "map[1:12]"} {
				if got := fmt.Sprint(salts.Salts[tenant]); got != wantSalt {
					t.Errorf("%s salts in use: got %s, want %s", tenant, got, wantSalt)
				}
			}
			if ts, _ := w.ks.TenantSalts("tenant-0"); len(ts.Versions) != 1 {
				t.Errorf("tenant-0's old salt not retired: %v", ts.Versions)
			}
		})
	}
}

// gate is a Target holding one value of tenant "tenant-0", sealed before any rotation. A job
// that would re-encrypt it (tenant-0's, or the master key's) stops there until release is
// closed: a rotation as long as the test wants. Other jobs pass through.
type gate struct {
	sealed  []byte
	held    chan struct{} // receives when a job stops at the gate
	release chan struct{}
}

func (g *gate) Reseal(ctx context.Context, fn keystore.ResealFunc) error {
	_, changed, err := fn("tenant-0", "gate", "gate", g.sealed)
	if err != nil || !changed {
		return err
	}
	select {
	case g.held <- struct{}{}:
	default:
	}
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Issue 15: a tenant whose rotation is long (or that rotates again and again) does not hold up
// another tenant's: Run runs them side by side.
func TestRotatorRunsTenantJobsSideBySide(t *testing.T) {
	kv := keystore.Backends()["bolt"](t)
	w := openWorld(t, kv, writeKeyring(t, t.TempDir()), nil)
	want := seed(t, w, 12, 2)
	sealed, err := w.ks.Seal("tenant-0", "gate", "gate", []byte("gate value"))
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{sealed: sealed, held: make(chan struct{}, 1), release: make(chan struct{})}
	rot, err := keystore.NewRotator(keystore.RotatorConfig{Keystore: w.ks, KV: kv, Source: w.source,
		Targets: []keystore.Target{g, w.keys, w.reg}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- rot.Run(ctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	if _, err := rot.StartTenant(t.Context(), "tenant-0"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.held:
	case <-time.After(30 * time.Second):
		t.Fatal("tenant-0's job did not reach the gate within 30s")
	}
	if _, err := rot.StartTenant(t.Context(), "tenant-1"); err != nil {
		t.Fatalf("tenant-1 while tenant-0's job runs: %v", err)
	}
	j := waitJob(t, rot, "tenant-1")
	if j.Resealed != 3+1+1 { // its 3 keys, 1 gateway token, its fingerprint key
		t.Fatalf("tenant-1's job: got %+v, want 5 records resealed", j)
	}
	if a, _, _ := rot.Job("tenant-0"); a.Phase == "done" {
		t.Fatal("tenant-0's job finished while held at the gate: the test did not hold it")
	}
	close(g.release)
	waitJob(t, rot, "tenant-0")
	checkAll(t, kv, w.source.Path, want, 2)
}

// waitJob polls tenant's job until it is done (deadline 30 s).
func waitJob(t *testing.T, rot *keystore.Rotator, tenant string) keystore.Job {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		j, ok, err := rot.Job(tenant)
		if err != nil {
			t.Fatal(err)
		}
		if ok && j.Phase == "done" {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %q not done within 30s: %+v", tenant, j)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// probeAfter is a Target that runs a function once, from its Quiesce, which rotation calls
// after the other targets' (it is last in Targets): when a finishing job has waited for the
// seals in flight and is about to scan.
type probeAfter struct{ fn atomic.Pointer[func()] }

func (*probeAfter) Reseal(context.Context, keystore.ResealFunc) error { return nil }
func (p *probeAfter) Quiesce() {
	if fn := p.fn.Swap(nil); fn != nil {
		(*fn)()
	}
}

// Jobs running side by side bring an interleaving one global job never had: tenant-1's
// rotation starts while tenant-0's job is finishing, past its wait for seals in flight, and a
// key of tenant-1 sealed under its old salt is not stored yet. tenant-0's job must not retire
// that salt (its scan cannot see the key); tenant-1's own job keeps it, after waiting for the
// key. The key opens.
func TestRotationRetiresOnlyVersionsSupersededBeforeItsWait(t *testing.T) {
	kv := &swapHookKV{KV: keystore.Backends()["bolt"](t)}
	w := openWorld(t, kv, writeKeyring(t, t.TempDir()), nil)
	seed(t, w, 8, 0)
	p := &probeAfter{}
	rot, err := keystore.NewRotator(keystore.RotatorConfig{Keystore: w.ks, KV: kv, Source: w.source,
		Targets: []keystore.Target{w.keys, w.reg, p}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rot.StartTenant(t.Context(), "tenant-0"); err != nil {
		t.Fatal(err)
	}

	sealed, release := make(chan struct{}), make(chan struct{})
	insert := func() { close(sealed); <-release } // inside Add: sealed under salt 1, not stored
	type added struct {
		k   keystore.APIKey
		err error
	}
	addDone, tenant1Done := make(chan added, 1), make(chan error, 1)
	const secret = "sk-test-inflight-tenant-1-SECRETSECRET"
	onQuiesce := func() { // tenant-0's job, finishing: its wait for seals in flight is over
		kv.hook.Store(&insert)
		go func() {
			k, err := w.keys.Add(context.Background(), keystore.AddRequest{Tenant: "tenant-1", Provider: "openai",
				Secret: keystore.Secret(secret)})
			addDone <- added{k, err}
		}()
		<-sealed
		if _, err := rot.StartTenant(context.Background(), "tenant-1"); err != nil {
			t.Errorf("start tenant-1: %v", err)
			return
		}
		go func() { _, err := rot.RunJob(context.Background(), "tenant-1"); tenant1Done <- err }()
		// tenant-1's job re-encrypts its stored records, then waits for tenant-0's to finish.
		deadline := time.Now().Add(30 * time.Second)
		for {
			use, err := rot.Usage(context.Background())
			if err != nil {
				t.Errorf("usage: %v", err)
				return
			}
			if use.Salts["tenant-1"][1] == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("tenant-1's records still under salt 1 after 30s: %v", use.Salts["tenant-1"])
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	p.fn.Store(&onQuiesce)
	if j, err := rot.RunJob(t.Context(), "tenant-0"); err != nil || j.Phase != "done" {
		t.Fatalf("tenant-0's job: %+v, %v", j, err)
	}
	if t.Failed() {
		return
	}
	close(release)
	a := <-addDone
	if a.err != nil {
		t.Fatal(a.err)
	}
	select {
	case err := <-tenant1Done:
		if err != nil {
			t.Fatalf("tenant-1's job: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("tenant-1's job did not finish within 30s")
	}
	o, _ := keystore.NewOpener(w.keys, audit.Actor{Kind: "service", ID: "proxy"}, keystore.ReasonUpstreamCredential, w.audit)
	if got, err := o.Open(t.Context(), "tenant-1", a.k.ID); err != nil || string(got) != secret {
		t.Fatalf("key sealed under tenant-1's old salt as tenant-0's job finished: %v", err)
	}
	if use, _ := rot.Usage(t.Context()); use.Salts["tenant-1"][1] != 1 {
		t.Fatalf("tenant-1's salt 1 must stay, used by that key: in use %v", use.Salts["tenant-1"])
	}
}

// A tenant job recorded before tenants had their own job records (under the one record all
// jobs shared) resumes after the upgrade.
func TestRotationResumesSharedRecordTenantJob(t *testing.T) {
	kv := keystore.Backends()["bolt"](t)
	keyring := writeKeyring(t, t.TempDir())
	w := openWorld(t, kv, keyring, nil)
	want := seed(t, w, 8, 0)
	s, err := w.ks.AddTenantSalt("tenant-1") // what the earlier StartTenant did before it stopped
	if err != nil {
		t.Fatal(err)
	}
	old, _ := json.Marshal(keystore.Job{Kind: "tenant", Tenant: "tenant-1", Master: 1, Salt: s, Phase: "reencrypt",
		Started: time.Unix(1700000000, 0).UTC()})
	if err := kv.Put("keystore.rotation", "job", old); err != nil {
		t.Fatal(err)
	}

	w = openWorld(t, kv, keyring, nil) // the upgraded process starts
	if _, ok, err := w.rot.Job(""); ok || err != nil {
		t.Fatalf("master job after the upgrade: ok %v, %v; want none", ok, err)
	}
	if j, ok, err := w.rot.Job("tenant-1"); !ok || err != nil || j.Phase != "reencrypt" || j.Salt != s {
		t.Fatalf("tenant-1's job after the upgrade: %+v, %v, %v; want the unfinished one", j, ok, err)
	}
	if j, err := w.rot.RunJob(t.Context(), "tenant-1"); err != nil || j.Resealed != 2+1 {
		t.Fatalf("resumed job: %+v, %v; want its 2 keys and fingerprint key resealed", j, err)
	}
	checkAll(t, kv, keyring, want, 0)
}
