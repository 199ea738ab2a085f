package policies

import (
	"slices"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// ruleCache is a topdown.VirtualCache (OPA's per-query memo of rule and function results)
// that is cheap to create: entries live in one flat slice scanned linearly, and the whole
// cache is reused across decisions through a pool. A decision caches a few dozen entries
// at most, for which a scan beats OPA's default tree of hash maps, which allocates on
// every insert.
type ruleCache struct {
	entries []ruleCacheEntry
	frames  []int // start index in entries of each pushed frame; the last one is active
}

type ruleCacheEntry struct {
	ref       ast.Ref
	value     *ast.Term
	undefined bool
}

var _ topdown.VirtualCache = (*ruleCache)(nil)

// ruleCachePool hands out empty caches; see Engine.decide.
type ruleCachePool struct{ p sync.Pool }

func (p *ruleCachePool) get() *ruleCache {
	if c, ok := p.p.Get().(*ruleCache); ok {
		return c
	}
	return &ruleCache{frames: []int{0}}
}

func (p *ruleCachePool) put(c *ruleCache) {
	if cap(c.entries) > 1024 { // an unusual policy: let the garbage collector have it
		return
	}
	clear(c.entries) // drop references to terms of the finished evaluation
	c.entries = c.entries[:0]
	c.frames = append(c.frames[:0], 0)
	p.p.Put(c)
}

func (c *ruleCache) Push() { c.frames = append(c.frames, len(c.entries)) }

func (c *ruleCache) Pop() {
	if len(c.frames) > 1 {
		start := c.frames[len(c.frames)-1]
		clear(c.entries[start:])
		c.entries = c.entries[:start]
		c.frames = c.frames[:len(c.frames)-1]
	}
}

func (c *ruleCache) find(ref ast.Ref) int {
	start := c.frames[len(c.frames)-1]
	for i := len(c.entries) - 1; i >= start; i-- {
		if c.entries[i].ref.Equal(ref) {
			return i
		}
	}
	return -1
}

// Get returns (value, false) for a cached value, (nil, true) for a cached undefined and
// (nil, false) for a miss, as topdown expects.
func (c *ruleCache) Get(ref ast.Ref) (*ast.Term, bool) {
	if i := c.find(ref); i >= 0 {
		return c.entries[i].value, c.entries[i].undefined
	}
	return nil, false
}

// Put records value for ref, or undefined when value is nil. topdown passes a ref backed
// by a buffer it reuses, so the slice is copied (its terms are not modified afterwards).
func (c *ruleCache) Put(ref ast.Ref, value *ast.Term) {
	if i := c.find(ref); i >= 0 {
		c.entries[i].value, c.entries[i].undefined = value, value == nil
		return
	}
	c.entries = append(c.entries, ruleCacheEntry{ref: slices.Clone(ref), value: value, undefined: value == nil})
}

// Keys returns the refs cached in the active frame that have a value.
func (c *ruleCache) Keys() []ast.Ref {
	var keys []ast.Ref
	for _, e := range c.entries[c.frames[len(c.frames)-1]:] {
		if e.value != nil {
			keys = append(keys, e.ref)
		}
	}
	return keys
}
