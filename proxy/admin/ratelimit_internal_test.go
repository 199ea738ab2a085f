package admin

import (
	"testing"
	"time"
)

// Retry-After is whole seconds, rounded up, and never 0 (which would invite a retry at once).
func TestRetrySeconds(t *testing.T) {
	for _, tt := range []struct {
		wait time.Duration
		want int
	}{
		{0, 1},
		{time.Microsecond, 1},
		{time.Second, 1},
		{time.Second + time.Nanosecond, 2},
		{10 * time.Second, 10},
		{90*time.Second - time.Millisecond, 90},
	} {
		if got := retrySeconds(tt.wait); got != tt.want {
			t.Errorf("retrySeconds(%v): got %d, want %d", tt.wait, got, tt.want)
		}
	}
}
