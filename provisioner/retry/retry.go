// Package retry holds the pacing the cloud drivers share when a call may be tried again:
// jittered exponential backoff, the Retry-After header, and a sleep that ends with its
// context.
package retry

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Backoff is the pause before retry number attempt+1: exponential from 200 ms to 5 s, with
// jitter so that many gateways do not retry in step.
func Backoff(attempt int) time.Duration {
	d := min(200*time.Millisecond<<min(attempt-1, 5), 5*time.Second)
	return d/2 + rand.N(d/2+1)
}

// ParseRetryAfter reads a Retry-After header: seconds or an HTTP date. Missing or
// unreadable means 1 s.
func ParseRetryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if secs, err := strconv.Atoi(h); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(t.Sub(now), 0)
	}
	return time.Second
}

// Sleep waits d, or until ctx ends (its error).
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
