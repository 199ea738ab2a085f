package retry

import (
	"net/http"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	rows := []struct {
		header string
		want   time.Duration
	}{
		{"0", 0},
		{"2", 2 * time.Second},
		{" 120 ", 2 * time.Minute},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"", time.Second},
		{"soon", time.Second},
		{"-3", time.Second},
	}
	for _, r := range rows {
		if got := ParseRetryAfter(r.header, now); got != r.want {
			t.Errorf("ParseRetryAfter(%q): got %s, want %s", r.header, got, r.want)
		}
	}
}

func TestBackoffBounds(t *testing.T) {
	t.Parallel()
	for attempt := 1; attempt <= 10; attempt++ {
		ceiling := min(200*time.Millisecond<<min(attempt-1, 5), 5*time.Second)
		for range 100 {
			if d := Backoff(attempt); d < ceiling/2 || d > ceiling {
				t.Fatalf("Backoff(%d): got %s, want within [%s, %s]", attempt, d, ceiling/2, ceiling)
			}
		}
	}
}
