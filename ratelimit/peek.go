package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Peek reports whether key could take one event now, without taking it: ok, or the wait
// until it could. It is for limits on events that must be refused before they happen: the
// proxy checks a client's credential only while its budget can still afford a failure.
func (m *Memory) Peek(_ context.Context, key string) (ok bool, retryAfter time.Duration, err error) {
	now := m.now()
	m.mu.Lock()
	tat := m.tat[key]
	m.mu.Unlock()
	_, ok, retryAfter = m.g.next(tat, now)
	return ok, retryAfter, nil
}

// tatScript reads a key's TAT (microseconds), or nil. A script, so that Redis needs no more
// of the client than Allow does (a redis.Scripter).
var tatScript = redis.NewScript(`return redis.call('GET', KEYS[1])`)

// Peek is Memory.Peek on the budget kept in Redis: one read, no write. An error (Redis
// unreachable) says nothing about the budget: the caller should refuse.
func (l *Redis) Peek(ctx context.Context, key string) (ok bool, retryAfter time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	var tat time.Time
	v, err := tatScript.Run(ctx, l.client, []string{l.prefix + key}).Int64()
	switch {
	case errors.Is(err, redis.Nil):
	case err != nil:
		return false, 0, fmt.Errorf("ratelimit: redis: %w", err)
	default:
		tat = time.UnixMicro(v)
	}
	_, ok, retryAfter = l.g.next(tat, l.now())
	return ok, retryAfter, nil
}
