package store

import (
	"context"
	"testing"
	"time"

	"github.com/moltgate/moltgate/internal/testenv"
)

// TestSlots: a limit holds across the replicas sharing a Redis, a slot given back is free at
// once, and the slots of a replica that stopped renewing them are free after their TTL
// (issue 11: sockets per subject across replicas).
func TestSlots(t *testing.T) {
	srv := testenv.Redis(t)
	a := openTestRedis(t, srv.Addr).Slots("test:slots:", 300*time.Millisecond)
	b := openTestRedis(t, srv.Addr).Slots("test:slots:", time.Minute)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); b.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	take := func(s *Slots, key, id string) bool {
		t.Helper()
		ok, err := s.Take(t.Context(), key, id, 2)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !take(a, "user:1", "1") || !take(b, "user:1", "1") {
		t.Fatal("two of a limit of two refused")
	}
	if take(b, "user:1", "2") || take(a, "user:1", "2") {
		t.Fatal("a third slot taken with a limit of two")
	}
	if !take(a, "user:2", "3") {
		t.Fatal("another key's slot refused")
	}
	if err := b.Give(t.Context(), "user:1", "1"); err != nil {
		t.Fatal(err)
	}
	if !take(b, "user:1", "4") {
		t.Fatal("a slot given back is not free")
	}
	// a never renews (no Run): its slot of user:1 frees after its TTL; b's, within its TTL, does not.
	testenv.WaitUntil(t, "the unrenewed slot free", 5*time.Second, func() bool { return take(b, "user:1", "5") })
	if take(b, "user:1", "6") {
		t.Fatal("a slot within its TTL was freed")
	}
}
