package store

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ErrTimeout is returned by an operation that did not finish within the store's timeout.
// Its outcome is unknown: a write may still land after the error. The operation goes on
// in the background, counted by Stuck, until it ends.
var ErrTimeout = errors.New("store: operation timed out")

// DefaultTimeout bounds one store operation when the caller sets none.
const DefaultTimeout = 5 * time.Second

// ops are the operation names of metrics and errors: a fixed set, so metric labels stay bounded.
var ops = [...]string{"get", "put", "delete", "list", "swap", "close"}

const (
	opGet = iota
	opPut
	opDelete
	opList
	opSwap
	opClose
)

// guard gives every operation of a backend a deadline and keeps the ones in flight, so
// a stuck store is an error to its caller and a reason on /readyz, never a silent hang.
type guard struct {
	timeout time.Duration

	mu       sync.Mutex
	next     uint64
	inflight map[uint64]flight

	timeouts [len(ops)]atomic.Uint64
}

type flight struct {
	op     int
	bucket string
	start  time.Time
}

func newGuard(timeout time.Duration) *guard {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &guard{timeout: timeout, inflight: map[uint64]flight{}}
}

// run calls fn in a goroutine of its own and waits for it up to the timeout. fn must not
// call the store (it may hold a transaction).
func (g *guard) run(op int, bucket string, fn func() error) error {
	g.mu.Lock()
	id := g.next
	g.next++
	g.inflight[id] = flight{op: op, bucket: bucket, start: time.Now()}
	g.mu.Unlock()

	done := make(chan error, 1)
	go func() {
		err := fn()
		g.mu.Lock()
		delete(g.inflight, id)
		g.mu.Unlock()
		done <- err
	}()
	t := time.NewTimer(g.timeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		g.timeouts[op].Add(1)
		return fmt.Errorf("%w: %s %s after %s", ErrTimeout, ops[op], bucket, g.timeout)
	}
}

// stuck reports the operations in flight for longer than the timeout, naming the oldest.
func (g *guard) stuck() error {
	n, oldest := g.overdue()
	if n == 0 {
		return nil
	}
	return fmt.Errorf("store: %d operation(s) stuck, oldest %s %s for %s", n, ops[oldest.op], oldest.bucket,
		time.Since(oldest.start).Round(time.Second))
}

// overdue counts the operations in flight for longer than the timeout and returns the oldest.
func (g *guard) overdue() (n int, oldest flight) {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, f := range g.inflight {
		if now.Sub(f.start) <= g.timeout {
			continue
		}
		if n == 0 || f.start.Before(oldest.start) {
			oldest = f
		}
		n++
	}
	return n, oldest
}
