package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Limit is a budget per key.
type Limit struct {
	// Rate is how many events are allowed per Per, once a burst is spent. Required.
	Rate int
	// Per is the period of Rate. Default 1 minute.
	Per time.Duration
	// Burst is how many events may come at once, from a whole budget. Default 1.
	Burst int
}

// ErrInvalid is returned by the constructors for a Limit that cannot be used.
var ErrInvalid = errors.New("ratelimit: invalid limit")

// gcra is a Limit in the algorithm's terms.
type gcra struct {
	interval  time.Duration // between two events at the sustained rate: Per / Rate
	tolerance time.Duration // how far the TAT may run ahead of now: Burst intervals
}

func (l Limit) gcra() (gcra, error) {
	if l.Per == 0 {
		l.Per = time.Minute
	}
	if l.Burst == 0 {
		l.Burst = 1
	}
	if l.Rate <= 0 || l.Per < 0 || l.Burst < 0 {
		return gcra{}, fmt.Errorf("%w: rate %d per %v, burst %d: want a positive rate, period and burst", ErrInvalid, l.Rate, l.Per, l.Burst)
	}
	interval := l.Per / time.Duration(l.Rate)
	if interval < time.Microsecond {
		return gcra{}, fmt.Errorf("%w: rate %d per %v: more than one event per microsecond", ErrInvalid, l.Rate, l.Per)
	}
	return gcra{interval: interval, tolerance: interval * time.Duration(l.Burst)}, nil
}

// next returns the key's TAT after one more event at now, given its TAT (zero: none), and
// whether the event is allowed; if not, retryAfter is how long until it would be.
func (g gcra) next(tat, now time.Time) (next time.Time, ok bool, retryAfter time.Duration) {
	if tat.Before(now) {
		tat = now
	}
	next = tat.Add(g.interval)
	if ahead := next.Sub(now); ahead > g.tolerance {
		return tat, false, ahead - g.tolerance
	}
	return next, true, 0
}

// MemoryConfig configures a Memory limiter.
type MemoryConfig struct {
	Limit Limit
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// MaxKeys bounds the keys held at once (keys whose budget is whole again are dropped
	// first); past it Allow fails with ErrFull. Default 100,000.
	MaxKeys int
}

// ErrFull is returned by Memory.Allow when MaxKeys keys are all spending their budgets.
var ErrFull = errors.New("ratelimit: too many keys")

// Memory is a limiter held in the process: its budgets are this replica's alone. It is safe
// for concurrent use. Its memory is bounded: a key whose budget is whole again is forgotten
// (its TAT is past, so it would be allowed exactly as an unknown key), swept whenever the
// keys held have doubled since the last sweep.
type Memory struct {
	g       gcra
	now     func() time.Time
	maxKeys int

	mu      sync.Mutex
	tat     map[string]time.Time
	sweepAt int // sweep when len(tat) reaches it
}

// minSweep is the fewest keys that make a sweep worth its scan.
const minSweep = 1024

// NewMemory returns a Memory limiter.
func NewMemory(cfg MemoryConfig) (*Memory, error) {
	g, err := cfg.Limit.gcra()
	if err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxKeys < 0 {
		return nil, fmt.Errorf("%w: MaxKeys %d", ErrInvalid, cfg.MaxKeys)
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = 100_000
	}
	return &Memory{g: g, now: cfg.Now, maxKeys: cfg.MaxKeys, tat: map[string]time.Time{}, sweepAt: minSweep}, nil
}

// Allow takes one event from key's budget: ok, or refused with the wait until it would be
// allowed.
func (m *Memory) Allow(_ context.Context, key string) (ok bool, retryAfter time.Duration, err error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	tat, known := m.tat[key]
	next, ok, retryAfter := m.g.next(tat, now)
	if !ok {
		return false, retryAfter, nil
	}
	if !known && len(m.tat) >= min(m.sweepAt, m.maxKeys) {
		m.sweep(now)
		if len(m.tat) >= m.maxKeys {
			return false, 0, ErrFull
		}
	}
	m.tat[key] = next
	return true, 0, nil
}

// sweep forgets the keys whose budget is whole at now. The caller holds mu.
func (m *Memory) sweep(now time.Time) {
	for k, tat := range m.tat {
		if !tat.After(now) {
			delete(m.tat, k)
		}
	}
	m.sweepAt = max(minSweep, 2*len(m.tat))
}
