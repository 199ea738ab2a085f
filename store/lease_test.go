package store

import (
	"errors"
	"testing"
	"time"

	"github.com/moltgate/moltgate/internal/testenv"
)

// TestLeases: one holder at a time on a key across processes sharing a Redis; a lease whose
// holder stopped renewing is taken over once expired, with a greater fencing token, and the
// old holder's renewal is then refused (ErrConflict); a released lease is free at once
// (issue 11: single-writer jobs; the one lease keystore rotation and provisioning share).
func TestLeases(t *testing.T) {
	srv := testenv.Redis(t)
	var now time.Time = time.Now()
	clock := func() time.Time { return now }
	a := Leases{KV: openTestRedis(t, srv.Addr), Bucket: "test.leases", Holder: "a", TTL: time.Minute, Now: clock}
	b := Leases{KV: openTestRedis(t, srv.Addr), Bucket: "test.leases", Holder: "b", TTL: time.Minute, Now: clock}

	la, err := a.Acquire("job")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Acquire("job"); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("b's acquire of a held lease: got %v, want ErrLeaseHeld", err)
	}
	if err := la.Renew(); err != nil {
		t.Fatalf("a's renewal: %v", err)
	}
	now = now.Add(2 * time.Minute) // a stopped renewing
	lb, err := b.Acquire("job")
	if err != nil {
		t.Fatalf("b's acquire of an expired lease: %v", err)
	}
	if lb.Token() <= la.Token() {
		t.Fatalf("fencing token after the takeover: got %d, want more than %d", lb.Token(), la.Token())
	}
	if err := la.Renew(); !errors.Is(err, ErrConflict) {
		t.Fatalf("a's renewal after b took over: got %v, want ErrConflict", err)
	}
	la.Release() // no longer a's: gives nothing up
	if _, err := a.Acquire("job"); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("a's acquire after its stale release: got %v, want ErrLeaseHeld", err)
	}
	lb.Release()
	lc, err := a.Acquire("job")
	if err != nil {
		t.Fatalf("a's acquire of a released lease: %v", err)
	}
	if lc.Token() <= lb.Token() {
		t.Fatalf("fencing token after a release: got %d, want more than %d", lc.Token(), lb.Token())
	}
}
