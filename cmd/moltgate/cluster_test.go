package main

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/store"
)

// TestReplicaNameTakenOverStops (issue 11): a chain, and so its checkpoints, has one writer,
// the holder of its replica name's lease. A replica that keeps renewing keeps its name, and
// no namesake gets it; one whose lease lapsed (it stalled, or Redis was unreachable) and was
// taken over stops at its next renewal rather than write the same chain.
func TestReplicaNameTakenOverStops(t *testing.T) {
	kv, err := store.OpenBolt(filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })
	const ttl = 300 * time.Millisecond
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))

	kept, err := claimReplica(kv, "rep-kept", ttl)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- keepReplica(ctx, kept, "rep-kept", ttl, logger) }()
	start := time.Now()
	testenv.WaitUntil(t, "three lease lifetimes with the name kept", 10*time.Second, func() bool {
		if _, err := claimReplica(kv, "rep-kept", ttl); err == nil {
			t.Fatal("a namesake took the name of a replica that renews it")
		}
		return time.Since(start) > 3*ttl
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("keepReplica of a kept name, at shutdown: %v, want nil", err)
	}

	stalled, err := claimReplica(kv, "rep-stalled", ttl)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, "a namesake taking the lapsed name", 10*time.Second, func() bool {
		_, err := claimReplica(kv, "rep-stalled", ttl)
		return err == nil
	})
	err = keepReplica(t.Context(), stalled, "rep-stalled", ttl, logger)
	if err == nil || !strings.Contains(err.Error(), "another process took this replica's name over") {
		t.Errorf("keepReplica once the name was taken over: %v, want it to stop saying so", err)
	}
}
