package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/moltgate/moltgate/store"
)

// BlocksBucket holds the blocks of SharedFailures on the shared store: key a client (its
// failureKey), value the end of its block (RFC 3339).
const BlocksBucket = "proxy.auth_blocks"

// Budget is a limiter kept where every replica reads it: ratelimit.Redis.
type Budget interface {
	Allow(ctx context.Context, key string) (ok bool, retryAfter time.Duration, err error)
	Peek(ctx context.Context, key string) (ok bool, retryAfter time.Duration, err error)
}

// BlocksKV is the part of the shared store SharedFailures writes its blocks to.
type BlocksKV interface {
	Get(bucket, key string) ([]byte, error)
	Put(bucket, key string, value []byte) error
	ForEach(bucket string, fn func(key string, value []byte) error) error
	// Swap replaces key's value old with new (nil: delete), or fails with store.ErrConflict.
	Swap(bucket, key string, old, new []byte) error
}

// SharedFailures is the FailureBudget of replicas on a shared store, with no store round trip
// on the request path. Failures are spent in Budget, in Redis, so failures spread over
// replicas spend one budget. A failure that leaves the budget spent blocks the client: the
// replica that saw it blocks it at once and writes the block to the store, whose change
// stream carries it to every other replica within a second (Changed), as any change. Peek
// reads this replica's blocks only, so a request costs a map lookup, and a Redis that cannot
// be reached fails requests as the stale view does, not by the limit.
type SharedFailures struct {
	budget Budget
	kv     BlocksKV
	now    func() time.Time
	logger *slog.Logger

	mu    sync.RWMutex
	until map[string]time.Time // client → end of its block
	swept time.Time            // when this replica last removed ended blocks from the store
}

var _ FailureBudget = (*SharedFailures)(nil)

// maxBlocks bounds the blocks held in memory; past it, ended ones are dropped.
const maxBlocks = 100_000

// NewSharedFailures returns a SharedFailures spending failures in budget and keeping blocks
// in kv. now is the clock (default time.Now).
func NewSharedFailures(budget Budget, kv BlocksKV, now func() time.Time, logger *slog.Logger) *SharedFailures {
	if now == nil {
		now = time.Now
	}
	return &SharedFailures{budget: budget, kv: kv, now: now, logger: logger, until: map[string]time.Time{}}
}

// Peek reports whether key is blocked here, and for how long.
func (s *SharedFailures) Peek(_ context.Context, key string) (bool, time.Duration, error) {
	s.mu.RLock()
	until, ok := s.until[key]
	s.mu.RUnlock()
	if d := until.Sub(s.now()); ok && d > 0 {
		return false, d, nil
	}
	return true, 0, nil
}

// Allow spends one failure of key's budget and blocks key if the budget is spent. An error
// (Redis unreachable) is returned, the failure uncounted.
func (s *SharedFailures) Allow(ctx context.Context, key string) (bool, time.Duration, error) {
	ok, retry, err := s.budget.Allow(ctx, key)
	if err != nil {
		return false, 0, err
	}
	if ok {
		// Blocked after the failure that spends the budget, as Memory is, not after the next.
		var more bool
		if more, retry, err = s.budget.Peek(ctx, key); err != nil || more {
			return true, 0, err
		}
	}
	until := s.now().Add(retry)
	s.set(key, until)
	if err := s.kv.Put(BlocksBucket, key, []byte(until.UTC().Format(time.RFC3339Nano))); err != nil {
		// Blocked here still; the others block the client at its next failure there.
		s.logger.LogAttrs(ctx, slog.LevelError, "auth failure block not shared", slog.Any("err", err))
	}
	s.sweep(ctx)
	return ok, retry, nil
}

// sweepEvery is the least time between two sweeps of ended blocks from the store by one replica.
const sweepEvery = time.Hour

// sweep removes the blocks that ended from the store, at most once per sweepEvery, when a
// block is written: so the bucket holds about the blocks of the last hour. Each removal is a
// compare-and-delete, so a block renewed meanwhile (by another replica) stays.
func (s *SharedFailures) sweep(ctx context.Context) {
	now := s.now()
	s.mu.Lock()
	due := now.Sub(s.swept) >= sweepEvery
	if due {
		s.swept = now
	}
	s.mu.Unlock()
	if !due {
		return
	}
	err := s.kv.ForEach(BlocksBucket, func(key string, v []byte) error {
		if until, err := time.Parse(time.RFC3339Nano, string(v)); err == nil && until.After(now) {
			return nil
		}
		if err := s.kv.Swap(BlocksBucket, key, v, nil); err != nil && !errors.Is(err, store.ErrConflict) {
			return err
		}
		return nil
	})
	if err != nil {
		s.logger.LogAttrs(ctx, slog.LevelWarn, "ended auth failure blocks not removed; tried again later", slog.Any("err", err))
	}
}

// Changed brings a block made on another replica here. Changes of other buckets are ignored,
// and a nil SharedFailures (no limit) ignores them all.
func (s *SharedFailures) Changed(bucket, key string) error {
	if s == nil || bucket != BlocksBucket {
		return nil
	}
	v, err := s.kv.Get(BlocksBucket, key)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.load(key, v)
}

// Reload reads every block again.
func (s *SharedFailures) Reload() error {
	if s == nil {
		return nil
	}
	return s.kv.ForEach(BlocksBucket, s.load)
}

func (s *SharedFailures) load(key string, v []byte) error {
	until, err := time.Parse(time.RFC3339Nano, string(v))
	if err != nil {
		return fmt.Errorf("proxy: %s %q: %w", BlocksBucket, key, err)
	}
	s.set(key, until)
	return nil
}

// set blocks key until then, unless it is blocked longer already.
func (s *SharedFailures) set(key string, until time.Time) {
	now := s.now()
	if !until.After(now) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if until.Before(s.until[key]) {
		return
	}
	if _, held := s.until[key]; !held && len(s.until) >= maxBlocks {
		for k, u := range s.until {
			if !u.After(now) {
				delete(s.until, k)
			}
		}
	}
	s.until[key] = until
}
