package testenv

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

// WaitOrDump waits for wg. If that takes longer than limit it writes every goroutine's
// stack to stderr and ends the test binary (status 2): a deadlock then shows its cycle at
// once, where t.Fatal, and even a panic, would run cleanups that hang on the same locks.
func WaitOrDump(t testing.TB, wg *sync.WaitGroup, limit time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(limit):
		buf := make([]byte, 4<<20)
		fmt.Fprintf(os.Stderr, "%s: not done after %s: deadlocked?\n%s", t.Name(), limit, buf[:runtime.Stack(buf, true)])
		os.Exit(2)
	}
}

// WaitUntil polls cond until it holds, failing the test after limit.
func WaitUntil(t testing.TB, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
