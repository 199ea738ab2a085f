package keystore

import (
	"fmt"
	"sync"
	"testing"
)

func TestTenantIndex(t *testing.T) {
	var x tenantIndex
	if x.load("nobody") != nil {
		t.Fatal("empty index found a tenant")
	}
	const n = 5000
	made := map[string]*tenantCache{}
	for i := range n {
		name := fmt.Sprintf("t%d", i)
		c := x.loadOrCreate(name)
		if c == nil || x.loadOrCreate(name) != c || x.load(name) != c {
			t.Fatalf("%s: not the same cache on every look-up", name)
		}
		made[name] = c
	}
	// Every tenant is found, wherever it sits (folded or pending), and each is visited once.
	seen := map[string]int{}
	x.each(func(name string, c *tenantCache) {
		seen[name]++
		if made[name] != c {
			t.Errorf("%s: each gave another cache", name)
		}
	})
	if len(seen) != n {
		t.Fatalf("each visited %d tenants, want %d", len(seen), n)
	}
	for name, k := range seen {
		if k != 1 {
			t.Fatalf("each visited %s %d times", name, k)
		}
		if x.load(name) != made[name] {
			t.Fatalf("%s: lost", name)
		}
	}
	// Folding is batched: far fewer folds than tenants, and what is pending stays small.
	x.mu.Lock()
	pending, read := len(x.pending), len(*x.read.Load())
	x.mu.Unlock()
	if pending+read != n || pending*8 > read+8 {
		t.Fatalf("read %d, pending %d: want all %d, at most an eighth pending", read, pending, n)
	}
}

func TestTenantIndexConcurrent(t *testing.T) {
	var x tenantIndex
	var wg sync.WaitGroup
	got := make([][]*tenantCache, 4)
	for g := range got {
		wg.Go(func() {
			for i := range 2000 {
				got[g] = append(got[g], x.loadOrCreate(fmt.Sprintf("t%d", i%700)))
				x.load(fmt.Sprintf("t%d", (i*7)%700))
			}
		})
	}
	wg.Wait()
	for i := range 2000 {
		for g := 1; g < len(got); g++ {
			if got[g][i] != got[0][i] {
				t.Fatalf("tenant t%d: two goroutines got different caches", i%700)
			}
		}
	}
}
