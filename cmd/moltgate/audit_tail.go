package main

import (
	"cmp"
	"slices"

	"github.com/moltgate/moltgate/audit"
)

// tailEvents keeps the last n events of several chains, for audit tail: the reader gives each
// replica's chain in turn, so the last n it gives would be one replica's. It keeps the last n
// of each chain, and Last merges them in time.
type tailEvents struct {
	n      int
	chains map[string][]audit.Event
}

func newTail(n int) *tailEvents { return &tailEvents{n: max(n, 0), chains: map[string][]audit.Event{}} }

// Add keeps e if it is among the last n of its replica's chain so far.
func (t *tailEvents) Add(e audit.Event) {
	c := append(t.chains[e.Replica], e)
	if len(c) > t.n {
		c = c[1:]
	}
	t.chains[e.Replica] = c
}

// Last is the last n events of every chain together, oldest first: by time, then by
// replica and seq for events of the same instant.
func (t *tailEvents) Last() []audit.Event {
	var all []audit.Event
	for _, c := range t.chains {
		all = append(all, c...)
	}
	slices.SortFunc(all, func(a, b audit.Event) int {
		return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.Replica, b.Replica), cmp.Compare(a.Seq, b.Seq))
	})
	return all[max(0, len(all)-t.n):]
}
