package ratelimit

import (
	"context"
	"testing"
	"time"
)

// peeker is a limiter that can also tell, without spending, whether an event would pass.
type peeker interface {
	limiter
	Peek(ctx context.Context, key string) (bool, time.Duration, error)
}

// TestPeek: Peek answers what Allow would, and takes nothing (issue 11: the proxy's budget
// of failed authentications is checked before a credential is, and spent only on failure).
func TestPeek(t *testing.T) {
	for name, newLimiter := range implementations {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			clock := newClock()
			l := newLimiter(t, hourly, clock).(peeker)
			peek := func(key string, wantOK bool, wantRetry time.Duration) {
				t.Helper()
				ok, retry, err := l.Peek(t.Context(), key)
				if err != nil || ok != wantOK || retry != wantRetry {
					t.Fatalf("Peek(%q): got %v, %v, %v; want %v, %v", key, ok, retry, err, wantOK, wantRetry)
				}
			}
			peek("a", true, 0)
			for range 10 {
				peek("a", true, 0) // peeking takes nothing
			}
			spend(t, l, "a", 3)
			peek("a", false, time.Hour)
			peek("b", true, 0)
			clock.Advance(59 * time.Minute)
			peek("a", false, time.Minute)
			clock.Advance(time.Minute)
			peek("a", true, 0)
			spend(t, l, "a", 1)
			peek("a", false, time.Hour)
		})
	}
}
