package store

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestGuardDeadline: an operation that does not finish in time is an error to its caller,
// a reason from Stuck and a metric, and stops being one when it ends (issue 15).
func TestGuardDeadline(t *testing.T) {
	g := newGuard(20 * time.Millisecond)
	if err := g.run(opGet, "b", func() error { return nil }); err != nil {
		t.Fatalf("quick operation: %v", err)
	}
	release := make(chan struct{})
	ended := make(chan struct{})
	err := g.run(opPut, "keys", func() error { <-release; close(ended); return nil })
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("stalled put: got %v, want ErrTimeout", err)
	}
	// Past the deadline it is stuck: readiness names it, the gauge counts it.
	deadline := time.Now().Add(10 * time.Second)
	for g.stuck() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := g.stuck(); err == nil || !strings.Contains(err.Error(), "put keys") {
		t.Fatalf("stuck: got %v, want it to name put keys", err)
	}
	want := `
# HELP moltgate_store_operation_timeouts_total Store operations that missed their deadline, by operation.
# TYPE moltgate_store_operation_timeouts_total counter
moltgate_store_operation_timeouts_total{op="close"} 0
moltgate_store_operation_timeouts_total{op="delete"} 0
moltgate_store_operation_timeouts_total{op="get"} 0
moltgate_store_operation_timeouts_total{op="list"} 0
moltgate_store_operation_timeouts_total{op="put"} 1
moltgate_store_operation_timeouts_total{op="swap"} 0
# HELP moltgate_store_stuck_operations Store operations running longer than the store timeout now.
# TYPE moltgate_store_stuck_operations gauge
moltgate_store_stuck_operations 1
`
	if err := testutil.CollectAndCompare(g, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	close(release)
	<-ended
	for g.stuck() != nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := g.stuck(); err != nil {
		t.Fatalf("after the operation ended: got %v, want nil", err)
	}
}
