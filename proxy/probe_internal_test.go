package proxy

import (
	"net/netip"
	"testing"
	"time"
)

// The limiter counts at most maxProbeClients clients; past that, new clients share one count
// (summarised as "others") until the counts of clients quiet for an interval are dropped.
func TestProbeLimiterIsBounded(t *testing.T) {
	t.Parallel()
	l := NewProbeLimiter(time.Minute)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	for i := range maxProbeClients {
		if n, shared := l.Note(addr(i), t0); n != 1 || shared {
			t.Fatalf("client %d: got (%d, %v), want (1, false)", i, n, shared)
		}
	}
	for i, want := range []int{1, 0, 0} { // new clients past the bound: one count
		if n, shared := l.Note(addr(maxProbeClients+i), t0); n != want || !shared {
			t.Fatalf("client past the bound %d: got (%d, %v), want (%d, true)", i, n, shared, want)
		}
	}
	if n, shared := l.Note(addr(maxProbeClients+3), t0.Add(time.Minute)); n != 1 || shared {
		t.Fatalf("after the interval: got (%d, %v), want (1, false): quiet clients dropped", n, shared)
	}
	if len(l.clients) > maxProbeClients {
		t.Fatalf("counting %d clients, want at most %d", len(l.clients), maxProbeClients)
	}
}
