package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultSlotTTL is how long a slot outlives the replica holding it when Slots.TTL is zero.
const DefaultSlotTTL = 30 * time.Second

// Slots counts things held across replicas against a limit, in Redis: the open sockets of
// one subject, wherever they are. Each key is a sorted set of its holders, scored by when
// each expires; a replica renews its own (Run), so the slots of a replica that died are free
// again within the TTL. Redis's clock is the only one read, so replicas' clocks do not
// matter. It is safe for concurrent use.
type Slots struct {
	r      *Redis
	prefix string
	owner  string // this process's part of every member
	ttl    time.Duration

	mu   sync.Mutex
	held map[string]map[string]struct{} // key → members
}

// Slots returns the slots under prefix (e.g. "moltgate:slots:ws:") on r, held for ttl
// (DefaultSlotTTL if zero) past this process's last renewal.
func (r *Redis) Slots(prefix string, ttl time.Duration) *Slots {
	if ttl <= 0 {
		ttl = DefaultSlotTTL
	}
	b := make([]byte, 8)
	rand.Read(b)
	return &Slots{r: r, prefix: prefix, owner: hex.EncodeToString(b), ttl: ttl, held: map[string]map[string]struct{}{}}
}

// takeScript drops the expired holders of KEYS[1], then adds ARGV[1] expiring in ARGV[3] ms
// if fewer than ARGV[2] hold it. 1: taken, 0: full.
var takeScript = redis.NewScript(`
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`)

// renewScript moves the expiry of holder ARGV[i+1] of KEYS[i] to ARGV[1] ms from now, if it
// still holds it.
var renewScript = redis.NewScript(`
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', now + tonumber(ARGV[1]), ARGV[i + 1])
  redis.call('PEXPIRE', key, ARGV[1])
end
return 0
`)

// Take takes a slot of key for id (unique in this process) if fewer than limit are held
// across replicas. An error leaves it untaken.
func (s *Slots) Take(ctx context.Context, key, id string, limit int) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.r.timeout)
	defer cancel()
	member := s.owner + ":" + id
	n, err := takeScript.Run(ctx, s.r.c, []string{s.prefix + key}, member, limit, s.ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("store: slots take: %w", err)
	}
	if n != 1 {
		return false, nil
	}
	s.mu.Lock()
	if s.held[key] == nil {
		s.held[key] = map[string]struct{}{}
	}
	s.held[key][member] = struct{}{}
	s.mu.Unlock()
	return true, nil
}

// Give gives back the slot of key that id holds. If Redis cannot be told, the slot is free
// anyway once its TTL passes, since it is no longer renewed.
func (s *Slots) Give(ctx context.Context, key, id string) error {
	member := s.owner + ":" + id
	s.mu.Lock()
	delete(s.held[key], member)
	if len(s.held[key]) == 0 {
		delete(s.held, key)
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, s.r.timeout)
	defer cancel()
	if err := s.r.c.ZRem(ctx, s.prefix+key, member).Err(); err != nil {
		return fmt.Errorf("store: slots give: %w", err)
	}
	return nil
}

// Run renews this process's slots every third of the TTL until ctx ends.
func (s *Slots) Run(ctx context.Context) error {
	t := time.NewTicker(s.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			s.renew(ctx) // a failure is retried at the next tick; the TTL leaves room for two
		}
	}
}

func (s *Slots) renew(ctx context.Context) error {
	var keys []string
	args := []any{s.ttl.Milliseconds()}
	s.mu.Lock()
	for key, members := range s.held {
		for m := range members {
			keys, args = append(keys, s.prefix+key), append(args, m)
		}
	}
	s.mu.Unlock()
	if len(keys) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.r.timeout)
	defer cancel()
	return renewScript.Run(ctx, s.r.c, keys, args...).Err()
}
