package authn

import (
	"slices"
	"sync"
	"time"
)

// tokenCache remembers verified session tokens by the SHA-256 of the token,
// so that a browser's repeated requests with the same session JWT skip the
// RSA verification. It holds no token: only hashes and identities.
//
// An entry is trusted for at most ttl after its verification (so a key
// removed from the JWKS stops being honoured within ttl) and never past the
// token's expiry, which is checked on every hit.
type tokenCache struct {
	max int           // entries; <= 0 disables the cache
	ttl time.Duration // how long a verification is reused

	mu sync.RWMutex
	m  map[[32]byte]cacheEntry
}

type cacheEntry struct {
	id    Identity
	exp   time.Time // the token's exp
	until time.Time // verification time + ttl
}

// cacheResult is the outcome of a lookup.
type cacheResult int

const (
	cacheMiss    cacheResult = iota // not cached, or cached too long ago: verify
	cacheHit                        // verified recently and not expired
	cacheExpired                    // verified, but its exp has passed
)

func newTokenCache(max int, ttl time.Duration) *tokenCache {
	c := &tokenCache{max: max, ttl: ttl}
	if max > 0 {
		c.m = make(map[[32]byte]cacheEntry, min(max, 1024))
	}
	return c
}

// get looks up the token with hash h at time now. Expiry is judged as the
// JWT library judges it: expired once now-leeway is after exp.
func (c *tokenCache) get(h [32]byte, now time.Time, leeway time.Duration) (Identity, cacheResult) {
	if c.max <= 0 {
		return Identity{}, cacheMiss
	}
	c.mu.RLock()
	e, ok := c.m[h]
	c.mu.RUnlock()
	switch {
	case !ok:
		return Identity{}, cacheMiss
	case now.Add(-leeway).After(e.exp):
		c.delete(h)
		return Identity{}, cacheExpired
	case now.After(e.until):
		return Identity{}, cacheMiss
	}
	id := e.id
	// Callers own what they get: a caller appending to FactorAges must
	// not change the cached identity.
	id.FactorAges = slices.Clone(id.FactorAges)
	return id, cacheHit
}

// put remembers that the token with hash h verified at now as id.
func (c *tokenCache) put(h [32]byte, id Identity, now time.Time) {
	if c.max <= 0 {
		return
	}
	e := cacheEntry{id: id, exp: id.Expires, until: now.Add(c.ttl)}
	e.id.FactorAges = slices.Clone(id.FactorAges)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[h]; !ok && len(c.m) >= c.max {
		c.evictLocked(now)
	}
	c.m[h] = e
}

// evictLocked makes room for one entry. It drops the stale entries among
// the first few that map iteration yields and, if there were none, the
// first one: map iteration starts at a random position, so this is random
// eviction in O(1), with no bookkeeping on the hit path. An attacker with
// many valid tokens can churn the cache but not grow it.
func (c *tokenCache) evictLocked(now time.Time) {
	const scan = 8
	var first [32]byte
	n, dropped := 0, false
	for h, e := range c.m {
		if n == 0 {
			first = h
		}
		if now.After(e.until) || now.After(e.exp) {
			delete(c.m, h)
			dropped = true
		}
		if n++; n == scan {
			break
		}
	}
	if !dropped && n > 0 {
		delete(c.m, first)
	}
}

func (c *tokenCache) delete(h [32]byte) {
	c.mu.Lock()
	delete(c.m, h)
	c.mu.Unlock()
}

func (c *tokenCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
