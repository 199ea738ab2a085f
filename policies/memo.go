package policies

import (
	"fmt"
	"hash/maphash"
	"math/bits"
	"slices"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultMemoSize is the number of decisions the memo holds when Config.MemoSize is zero.
const DefaultMemoSize = 100_000

// memoShards splits the memo so that concurrent decisions rarely wait on one another: each
// shard has its own lock, map and LRU list.
const memoShards = 64

// memo is an exact memo of decisions: a decision is stored under the key memoPlan.appendKey
// builds (the policy revision, the data generation and every input value the rules read)
// and handed back only for an equal key. It is bounded: each shard evicts its least
// recently used entry past its share of the size. A shard seeing a newer data generation
// drops everything it holds at once, since no key of an older generation can match again.
//
// A decision is stored the second time its key misses, not the first: each shard remembers
// the hashes of keys it has turned away in a small table (a doorkeeper, as in TinyLFU's
// admission). Traffic whose every request is new (a scan, unique paths) then costs the memo
// a key, a hash and a probe, and never an entry, an eviction of a useful decision or a
// bigger heap for the collector to walk. Admission only decides what is kept: what is
// handed back is always a decision stored under an equal key.
type memo struct {
	seed   maphash.Seed
	shards [memoShards]memoShard
	limit  int // entries per shard
}

type memoShard struct {
	mu      sync.Mutex
	gen     uint64
	entries map[string]*memoEntry
	head    memoEntry // sentinel of the LRU list: head.next is the most recent
	seen    []uint64  // the doorkeeper: hashes of keys turned away once, in buckets of doorWays; 0 is empty
	turn    uint64    // picks the slot a full bucket gives up
	_       [8]byte   // keep shards on separate cache lines
}

type memoEntry struct {
	key        string
	d          Decision
	prev, next *memoEntry
}

// memoStats counts what a lookup or store did, for the engine's metrics.
type memoStats struct {
	evicted int
}

// newMemo returns a memo of about size entries; nil (no memo) when size is not positive.
func newMemo(size int) *memo {
	if size <= 0 {
		return nil
	}
	m := &memo{seed: maphash.MakeSeed(), limit: max(1, (size+memoShards-1)/memoShards)}
	slots := max(doorWays, 1<<bits.Len(uint(2*m.limit))) // a power of two above twice the shard's share
	for i := range m.shards {
		s := &m.shards[i]
		s.entries = map[string]*memoEntry{}
		s.head.next, s.head.prev = &s.head, &s.head
		s.seen = make([]uint64, slots)
	}
	return m
}

// hash returns the hash of key, which picks its shard and its doorkeeper slot.
func (m *memo) hash(key []byte) uint64 { return maphash.Bytes(m.seed, key) }

func (m *memo) shard(h uint64) *memoShard { return &m.shards[h%memoShards] }

// get returns the decision stored under key, made at data generation gen.
func (m *memo) get(key []byte, gen uint64) (Decision, bool) {
	s := m.shard(m.hash(key))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(gen)
	e, ok := s.entries[string(key)]
	if !ok || s.gen != gen {
		return Decision{}, false
	}
	s.unlink(e)
	s.pushFront(e)
	d := e.d
	d.Scopes = slices.Clone(d.Scopes) // the caller owns what it gets
	return d, true
}

// put stores d under key, made at data generation gen, if key was turned away before (see
// memo); it returns how many entries it evicted.
func (m *memo) put(key []byte, gen uint64, d Decision) memoStats {
	h := m.hash(key)
	s := m.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(gen)
	if s.gen != gen { // decided on data older than the shard has seen: never reused
		return memoStats{}
	}
	if _, ok := s.entries[string(key)]; ok {
		return memoStats{}
	}
	if !s.admit(h) {
		return memoStats{}
	}
	d.Scopes = slices.Clone(d.Scopes)
	e := &memoEntry{key: string(key), d: d}
	s.entries[e.key] = e
	s.pushFront(e)
	var st memoStats
	for len(s.entries) > m.limit {
		last := s.head.prev
		s.unlink(last)
		delete(s.entries, last.key)
		st.evicted++
	}
	return st
}

// len returns the number of entries held.
func (m *memo) len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += len(s.entries)
		s.mu.Unlock()
	}
	return n
}

// advance drops the shard's entries when gen is newer than any it has seen.
func (s *memoShard) advance(gen uint64) {
	if gen <= s.gen {
		return
	}
	s.gen = gen
	if len(s.entries) > 0 {
		clear(s.entries)
		s.head.next, s.head.prev = &s.head, &s.head
	}
}

// doorWays is how many hashes share a bucket of the doorkeeper: with one, two hot keys of
// one slot would push each other out forever and never be stored.
const doorWays = 4

// admit reports whether the key of hash h was turned away before, and forgets it if so;
// otherwise it remembers h in its bucket and turns the key away. A full bucket gives up a
// slot picked by a counter, not its oldest: more keys than ways, coming round in a fixed
// order, would each push out the next one forever. Two keys whose hashes are equal are one
// to the doorkeeper: that can only make a decision stored a miss early.
func (s *memoShard) admit(h uint64) bool {
	fp := h | 1 // never 0, the empty slot
	i := int((h/memoShards)&uint64(len(s.seen)/doorWays-1)) * doorWays
	b := s.seen[i : i+doorWays : i+doorWays]
	free := -1
	for j, seen := range b {
		switch seen {
		case fp:
			b[j] = 0
			return true
		case 0:
			free = j
		}
	}
	if free < 0 {
		s.turn++
		free = int(s.turn % doorWays)
	}
	b[free] = fp
	return false
}

func (s *memoShard) unlink(e *memoEntry) {
	e.prev.next, e.next.prev = e.next, e.prev
}

func (s *memoShard) pushFront(e *memoEntry) {
	e.prev, e.next = &s.head, s.head.next
	s.head.next.prev = e
	s.head.next = e
}

// memoHook is the engine's side of the memo: the memo itself (nil when off by
// configuration), buffers for keys, and the metrics.
type memoHook struct {
	memo      *memo
	bufs      sync.Pool
	hit       prometheus.Counter
	miss      prometheus.Counter
	off       prometheus.Counter
	evictions prometheus.Counter
	disabled  map[string]prometheus.GaugeFunc // by reason
}

// newMemoHook builds the memo of size entries (Config.MemoSize: zero means DefaultMemoSize,
// negative none) and registers its metrics on reg (nil: not registered). cur tells which
// set decides, for the gauge of why the memo is off.
func newMemoHook(size int, reg prometheus.Registerer, cur func() *policySet) (*memoHook, error) {
	if size == 0 {
		size = DefaultMemoSize
	}
	h := &memoHook{memo: newMemo(size), disabled: map[string]prometheus.GaugeFunc{}}
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "moltgate_policy_memo_lookups_total",
		Help: "Decisions by what the exact decision memo did: hit (reused), miss (evaluated; stored the second time its key misses), off (evaluated: the memo is off, see moltgate_policy_memo_disabled).",
	}, []string{"result"})
	h.hit, h.miss, h.off = lookups.WithLabelValues("hit"), lookups.WithLabelValues("miss"), lookups.WithLabelValues("off")
	h.evictions = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "moltgate_policy_memo_evictions_total",
		Help: "Decisions the memo dropped, least recently used first, to stay within policies.memo.size.",
	})
	entries := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "moltgate_policy_memo_entries",
		Help: "Decisions the memo holds.",
	}, func() float64 {
		if h.memo == nil {
			return 0
		}
		return float64(h.memo.len())
	})
	collectors := []prometheus.Collector{lookups, h.evictions, entries}
	for _, reason := range []string{MemoOffConfig, MemoOffNondeterministic} {
		h.disabled[reason] = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "moltgate_policy_memo_disabled",
			Help:        "1 while every decision is evaluated for this reason: disabled_by_config (policies.memo.size 0) or nondeterministic_builtin (the rules call one; /readyz names it).",
			ConstLabels: prometheus.Labels{"reason": reason},
		}, func() float64 {
			if r, _ := h.status(cur()); r == reason {
				return 1
			}
			return 0
		})
		collectors = append(collectors, h.disabled[reason])
	}
	if reg != nil {
		for _, c := range collectors {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("policies: register metrics: %w", err)
			}
		}
	}
	return h, nil
}

// status is why decisions of set are not memoised, with detail; "" when they are.
func (h *memoHook) status(set *policySet) (reason, detail string) {
	if h.memo == nil {
		return MemoOffConfig, "policies.memo.size is 0"
	}
	if set.memo.off != "" {
		return set.memo.off, set.memo.detail
	}
	return "", ""
}

// MemoStatus returns why the engine evaluates every decision, with detail for /readyz
// (such as the non-deterministic builtin the rules call and where); "" while the exact
// decision memo serves.
func (e *Engine) MemoStatus() (reason, detail string) { return e.memos.status(e.cur.Load()) }

// memoKey returns the key of input for set at data generation gen, nil when the decision is
// not to be memoised. Its encoder goes back with memoDone.
func (e *Engine) memoKey(set *policySet, gen uint64, input ast.Value) *keyEncoder {
	h := e.memos
	if h.memo == nil || set.memo.off != "" {
		h.off.Inc()
		return nil
	}
	k, _ := h.bufs.Get().(*keyEncoder)
	if k == nil {
		k = &keyEncoder{}
	}
	if !k.key(set.memo, set.revision, gen, input) {
		h.bufs.Put(k)
		h.off.Inc()
		return nil
	}
	return k
}

// memoGet returns the decision memoised under key, marked Reused.
func (e *Engine) memoGet(key *keyEncoder, gen uint64) (Decision, bool) {
	if key == nil {
		return Decision{}, false
	}
	d, ok := e.memos.memo.get(key.buf, gen)
	if !ok {
		e.memos.miss.Inc()
		return Decision{}, false
	}
	e.memos.hit.Inc()
	e.memoDone(key)
	d.Reused = true
	return d, true
}

// memoPut stores an evaluated decision under key and gives the key's encoder back.
func (e *Engine) memoPut(key *keyEncoder, gen uint64, d Decision) {
	if key == nil {
		return
	}
	if st := e.memos.memo.put(key.buf, gen, d); st.evicted > 0 {
		e.memos.evictions.Add(float64(st.evicted))
	}
	e.memoDone(key)
}

// memoDone gives a key's encoder back (nil: nothing to do).
func (e *Engine) memoDone(key *keyEncoder) {
	if key != nil && cap(key.buf) <= 4096 {
		e.memos.bufs.Put(key)
	}
}
