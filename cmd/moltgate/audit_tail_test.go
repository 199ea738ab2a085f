package main

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/moltgate/moltgate/audit"
)

// TestTailMergesReplicas (issue 11): audit tail over every replica's chain (--redis) shows the
// last events of them all, in time, though the reader gives one chain after another.
func TestTailMergesReplicas(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	ev := func(replica string, seq uint64, sec int) audit.Event {
		return audit.Event{Replica: replica, Seq: seq, Time: t0.Add(time.Duration(sec) * time.Second)}
	}
	// Replica a wrote at seconds 0, 3, 6, 9; b at 1, 4, 7, 10; c at 2, 5, 8 and 10.
	var chains []audit.Event
	for r, name := range []string{"a", "b", "c"} {
		for i := range 4 {
			chains = append(chains, ev(name, uint64(i+1), min(10, 3*i+r)))
		}
	}
	tests := []struct {
		n    int
		want []string
	}{
		{0, nil},
		{1, []string{"c4"}},
		{4, []string{"c3", "a4", "b4", "c4"}},
		{5, []string{"b3", "c3", "a4", "b4", "c4"}},
		{20, []string{"a1", "b1", "c1", "a2", "b2", "c2", "a3", "b3", "c3", "a4", "b4", "c4"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.n), func(t *testing.T) {
			tail := newTail(tt.n)
			for _, e := range chains {
				tail.Add(e)
			}
			var got []string
			for _, e := range tail.Last() {
				got = append(got, fmt.Sprintf("%s%d", e.Replica, e.Seq))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("last %d: got %v, want %v", tt.n, got, tt.want)
			}
		})
	}
}
