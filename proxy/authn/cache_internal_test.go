package authn

import (
	"testing"
	"time"
)

func TestTokenCacheBounded(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	c := newTokenCache(16, time.Minute)
	for i := range 1000 {
		var h [32]byte
		h[0], h[1] = byte(i), byte(i>>8)
		c.put(h, Identity{Kind: KindUser, Expires: now.Add(time.Hour)}, now)
		if n := c.len(); n > 16 {
			t.Fatalf("after %d puts: got %d entries, want <= 16", i+1, n)
		}
	}
}

func TestTokenCacheEvictsStaleFirst(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	c := newTokenCache(4, time.Minute)
	for i := range 3 {
		c.put([32]byte{byte(i)}, Identity{Expires: now.Add(time.Second)}, now)
	}
	fresh := [32]byte{9}
	c.put(fresh, Identity{Expires: now.Add(time.Hour)}, now.Add(90*time.Second))
	later := now.Add(2 * time.Minute) // the first three are stale now
	c.put([32]byte{10}, Identity{Expires: later.Add(time.Hour)}, later)
	if _, res := c.get(fresh, later, 0); res != cacheHit {
		t.Errorf("fresh entry: got %v, want hit (stale ones should go first)", res)
	}
}

func TestTokenCacheResults(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	c := newTokenCache(4, time.Minute)
	h := [32]byte{1}
	c.put(h, Identity{Expires: now.Add(2 * time.Minute)}, now)
	tests := []struct {
		at   time.Duration
		want cacheResult
	}{
		{0, cacheHit},
		{59 * time.Second, cacheHit},
		{61 * time.Second, cacheMiss},              // TTL passed: verify again
		{2*time.Minute + 5*time.Second, cacheMiss}, // within leeway: verify again
		{2*time.Minute + 6*time.Second, cacheExpired},
		{0, cacheMiss}, // the expired entry was dropped
	}
	for _, tt := range tests {
		if _, got := c.get(h, now.Add(tt.at), 5*time.Second); got != tt.want {
			t.Errorf("at +%s: got %v, want %v", tt.at, got, tt.want)
		}
	}
}
