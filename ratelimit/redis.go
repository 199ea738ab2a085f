package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisConfig configures a Redis limiter.
type RedisConfig struct {
	Limit Limit
	// Prefix is put before every key, so limits that share a Redis do not share budgets.
	// Required, e.g. "moltgate:ratelimit:admin-tenant:".
	Prefix string
	// Now is the clock. Default time.Now. Each replica uses its own: a replica whose clock
	// runs ahead of the others by d lets a key through up to d early, so keep clocks in sync
	// (NTP); the budget is kept in Redis either way.
	Now func() time.Time
	// Timeout bounds one call to Redis. Default 1s.
	Timeout time.Duration
}

// Redis is a limiter whose budgets are kept in Redis, shared by every replica that uses the
// same server and Prefix: the limits hold across replicas. Each key is one Redis string, its
// TAT in microseconds, set with an expiry at that TAT (when its budget is whole again), so an
// idle key costs nothing. One Lua script reads and sets it, atomically. It is safe for
// concurrent use.
//
// moltgate serve limits with Memory on bbolt and with Redis on the Redis store (issue 11);
// it is tested against a real redis-server.
type Redis struct {
	g       gcra
	client  redis.Scripter
	prefix  string
	now     func() time.Time
	timeout time.Duration
}

// allowScript is GCRA on one key. KEYS[1]: the key. ARGV: now, the interval and the tolerance,
// in microseconds. It answers {1, 0} (allowed) or {0, microseconds until it would be}.
// Microseconds since 1970 are below 2^53, so Lua's doubles hold them exactly; %.0f writes
// them without an exponent.
var allowScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
local new_tat = tat + interval
local ahead = new_tat - now
if ahead > tolerance then
  return {0, ahead - tolerance}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil(ahead / 1000))
return {1, 0}
`)

// NewRedis returns a Redis limiter over client (a *redis.Client, or any redis.Scripter).
func NewRedis(cfg RedisConfig, client redis.Scripter) (*Redis, error) {
	g, err := cfg.Limit.gcra()
	if err != nil {
		return nil, err
	}
	if client == nil || cfg.Prefix == "" {
		return nil, errors.New("ratelimit: redis: a client and a Prefix are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("%w: Timeout %v", ErrInvalid, cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = time.Second
	}
	return &Redis{g: g, client: client, prefix: cfg.Prefix, now: cfg.Now, timeout: cfg.Timeout}, nil
}

// Allow takes one event from key's budget: ok, or refused with the wait until it would be
// allowed. An error (Redis unreachable, slow past Timeout) allows nothing: the caller decides,
// and should refuse.
func (l *Redis) Allow(ctx context.Context, key string) (ok bool, retryAfter time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	res, err := allowScript.Run(ctx, l.client, []string{l.prefix + key},
		l.now().UnixMicro(), l.g.interval.Microseconds(), l.g.tolerance.Microseconds()).Int64Slice()
	if err != nil {
		return false, 0, fmt.Errorf("ratelimit: redis: %w", err)
	}
	if len(res) != 2 {
		return false, 0, fmt.Errorf("ratelimit: redis: unexpected answer %v", res)
	}
	return res[0] == 1, time.Duration(res[1]) * time.Microsecond, nil
}
