package keystore_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/store"
)

// TestRotationLeaseAcrossProcesses: processes sharing a Redis store run a rotation job one at
// a time, under its lease. A job whose holder died mid-run (its lease no longer renewed) is
// taken over by one of the live processes once the lease expires, with a greater fencing
// token, and finished; every record opens afterwards (issue 11).
func TestRotationLeaseAcrossProcesses(t *testing.T) {
	srv := testenv.Redis(t)
	open := func() *store.Redis {
		kv, err := store.OpenRedis(t.Context(), store.RedisConfig{Addr: srv.Addr})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { kv.Close() })
		return kv
	}
	keyring := writeKeyring(t, t.TempDir())
	a := openWorld(t, open(), keyring, nil)
	want := seed(t, a, 40, 4)
	if _, err := a.rot.StartTenant(t.Context(), "tenant-1"); err != nil {
		t.Fatal(err)
	}
	// The process that started it died holding the job's lease, which it no longer renews.
	dead, _ := json.Marshal(map[string]any{"holder": "dead", "token": 7, "expires": time.Now().Add(500 * time.Millisecond)})
	if err := a.kv.Put("keystore.rotation.leases", "tenant/tenant-1", dead); err != nil {
		t.Fatal(err)
	}

	var resealed [2]atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{}, 2)
	for i, holder := range []string{"b", "c"} {
		w := openWorld(t, open(), keyring, nil)
		rot, err := keystore.NewRotator(keystore.RotatorConfig{Keystore: w.ks, KV: w.kv, Source: w.source,
			Targets: []keystore.Target{w.keys, w.reg}, Shared: true, Holder: holder, LeaseTTL: 300 * time.Millisecond,
			OnReseal: func(int) { resealed[i].Add(1) }})
		if err != nil {
			t.Fatal(err)
		}
		go func() { rot.Run(ctx); stopped <- struct{}{} }()
	}
	t.Cleanup(func() { cancel(); <-stopped; <-stopped })

	var job keystore.Job
	testenv.WaitUntil(t, "the job finished by a live process", 20*time.Second, func() bool {
		j, _, err := a.rot.Job("tenant-1")
		if err != nil {
			t.Fatal(err)
		}
		job = j
		return j.Phase == "done"
	})
	if job.Fence != 8 || (job.Holder != "b" && job.Holder != "c") {
		t.Errorf("job finished with fence %d by %q, want fence 8 (one takeover after the dead holder's 7) by b or c", job.Fence, job.Holder)
	}
	if b, c := resealed[0].Load(), resealed[1].Load(); b == 0 && c == 0 || b != 0 && c != 0 {
		t.Errorf("records resealed by b: %d, by c: %d; want all by one of them", b, c)
	}
	checkAll(t, a.kv, keyring, want, 4)
}

// TestMasterVersionReachesOtherProcesses: a master key rotation started by one process adds a
// version to the shared keyring; another process sharing the store loads it when it sees the
// job record change (what the change stream tells it), and opens what the first sealed under
// it (issue 11).
func TestMasterVersionReachesOtherProcesses(t *testing.T) {
	srv := testenv.Redis(t)
	open := func() *store.Redis {
		kv, err := store.OpenRedis(t.Context(), store.RedisConfig{Addr: srv.Addr})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { kv.Close() })
		return kv
	}
	keyring := writeKeyring(t, t.TempDir())
	a, b := openWorld(t, open(), keyring, nil), openWorld(t, open(), keyring, nil)
	if _, err := a.rot.StartMaster(t.Context()); err != nil {
		t.Fatal(err)
	}
	sealed, err := a.ks.Seal("tenant-1", "rec", "test", []byte("after the rotation"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.ks.Open("tenant-1", "rec", "test", sealed); err == nil {
		t.Fatal("opened under a master version the process never loaded")
	}
	if err := b.rot.Changed(t.Context(), "keystore.rotation", "job"); err != nil {
		t.Fatal(err)
	}
	got, err := b.ks.Open("tenant-1", "rec", "test", sealed)
	if err != nil || string(got) != "after the rotation" {
		t.Fatalf("open after the change: %q, %v", got, err)
	}
	if cur := b.ks.Ring().Current(); cur != a.ks.Ring().Current() {
		t.Errorf("current master version: got %d, want %d (the other process's)", cur, a.ks.Ring().Current())
	}
}

// TestStalledRotationIsFenced: a run stalled past its lease's expiry, whose job another
// process took over (stamping its greater fencing token into the job record), writes nothing
// to the job when it wakes: its next save is refused with ErrLeaseLost, and the record keeps
// the new holder's token and phase (issue 11).
func TestStalledRotationIsFenced(t *testing.T) {
	srv := testenv.Redis(t)
	kv, err := store.OpenRedis(t.Context(), store.RedisConfig{Addr: srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })
	keyring := writeKeyring(t, t.TempDir())
	w := openWorld(t, kv, keyring, nil)
	seed(t, w, 80, 2)
	stalled, wake := make(chan struct{}), make(chan struct{})
	rot, err := keystore.NewRotator(keystore.RotatorConfig{Keystore: w.ks, KV: w.kv, Source: w.source,
		Targets: []keystore.Target{w.keys, w.reg}, Shared: true, Holder: "a", LeaseTTL: time.Minute,
		OnReseal: func(n int) {
			if n == 10 {
				close(stalled)
				<-wake
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rot.StartMaster(t.Context()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := rot.RunJob(t.Context(), ""); done <- err }()
	<-stalled
	// Another process took the job over (a's lease lapsed) and recorded its token.
	raw, err := w.kv.Get("keystore.rotation", "job")
	if err != nil {
		t.Fatal(err)
	}
	var j map[string]any
	json.Unmarshal(raw, &j)
	j["fence"], j["holder"] = 9, "b"
	taken, _ := json.Marshal(j)
	if err := w.kv.Put("keystore.rotation", "job", taken); err != nil {
		t.Fatal(err)
	}
	close(wake)
	if err := <-done; !errors.Is(err, keystore.ErrLeaseLost) {
		t.Fatalf("the stalled run after the takeover: got %v, want ErrLeaseLost", err)
	}
	job, _, err := rot.Job("")
	if err != nil {
		t.Fatal(err)
	}
	if job.Fence != 9 || job.Holder != "b" || job.Phase != "reencrypt" {
		t.Errorf("job record after the stalled run woke: fence %d, holder %q, phase %s; want b's (9, reencrypt) untouched",
			job.Fence, job.Holder, job.Phase)
	}
}
