package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisConfig configures the Redis backend.
type RedisConfig struct {
	// Addr is host:port of the Redis server. Required.
	Addr string
	// Username and Password authenticate (ACL); empty means none.
	Username string
	Password string
	// DB is the database number. Default 0.
	DB int
	// Prefix is put before every bucket's hash key. Default "moltgate:kv:".
	Prefix string
	// Timeout bounds one operation, since the KV interface carries no context. Default 5s.
	Timeout time.Duration
}

// Redis is the KV store on a Redis server, for many replicas sharing state: one hash per
// bucket (key <prefix><bucket>), fields are keys. It has the same semantics as Bolt: Get of a
// missing key is ErrNotFound, ForEach walks in key order, Swap is atomic (a Lua script).
// It is safe for concurrent use.
type Redis struct {
	c       *redis.Client
	prefix  string
	timeout time.Duration
	g       *guard
}

// OpenRedis connects to cfg.Addr and checks the server answers.
func OpenRedis(ctx context.Context, cfg RedisConfig) (*Redis, error) {
	if cfg.Addr == "" {
		return nil, errors.New("store: redis: addr required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "moltgate:kv:"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	c := redis.NewClient(&redis.Options{Addr: cfg.Addr, Username: cfg.Username, Password: cfg.Password, DB: cfg.DB,
		DisableIdentity: true})
	r := &Redis{c: c, prefix: cfg.Prefix, timeout: cfg.Timeout, g: newGuard(cfg.Timeout)}
	pctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("store: redis %s: %w", cfg.Addr, err)
	}
	return r, nil
}

// Close closes the connections.
func (r *Redis) Close() error { return r.c.Close() }

// Stuck returns an error naming the operations running longer than the timeout, or nil.
func (r *Redis) Stuck() error { return r.g.stuck() }

func (r *Redis) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), r.timeout)
}

// Get returns the value under bucket/key, or ErrNotFound.
func (r *Redis) Get(bucket, key string) ([]byte, error) {
	var v []byte
	err := r.g.run(opGet, bucket, func() error {
		ctx, cancel := r.ctx()
		defer cancel()
		var err error
		v, err = r.c.HGet(ctx, r.prefix+bucket, key).Bytes()
		if errors.Is(err, redis.Nil) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("store: redis get %s: %w", bucket, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return v, nil
}

// Put stores value under bucket/key.
func (r *Redis) Put(bucket, key string, value []byte) error {
	return r.g.run(opPut, bucket, func() error {
		ctx, cancel := r.ctx()
		defer cancel()
		if err := r.c.HSet(ctx, r.prefix+bucket, key, value).Err(); err != nil {
			return fmt.Errorf("store: redis put %s: %w", bucket, err)
		}
		return nil
	})
}

// Delete removes bucket/key; deleting a missing key is not an error.
func (r *Redis) Delete(bucket, key string) error {
	return r.g.run(opDelete, bucket, func() error {
		ctx, cancel := r.ctx()
		defer cancel()
		if err := r.c.HDel(ctx, r.prefix+bucket, key).Err(); err != nil {
			return fmt.Errorf("store: redis delete %s: %w", bucket, err)
		}
		return nil
	})
}

// ForEach calls fn for every key in bucket in key order. It reads the whole bucket first
// (HGETALL), so fn sees a snapshot and may write to the store.
func (r *Redis) ForEach(bucket string, fn func(key string, value []byte) error) error {
	var all map[string]string
	err := r.g.run(opList, bucket, func() error {
		ctx, cancel := r.ctx()
		defer cancel()
		var err error
		if all, err = r.c.HGetAll(ctx, r.prefix+bucket).Result(); err != nil {
			return fmt.Errorf("store: redis list %s: %w", bucket, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return eachSorted(all, fn)
}

// ForEachPrefix is ForEach over the keys that start with prefix: HSCAN with MATCH, so only
// those cross the network (Redis still walks the hash). fn sees a snapshot, as with ForEach.
func (r *Redis) ForEachPrefix(bucket, prefix string, fn func(key string, value []byte) error) error {
	all := map[string]string{}
	err := r.g.run(opList, bucket, func() error {
		ctx, cancel := r.ctx()
		defer cancel()
		it := r.c.HScan(ctx, r.prefix+bucket, 0, globEscape(prefix)+"*", 1000).Iterator()
		for it.Next(ctx) {
			k := it.Val()
			if !it.Next(ctx) {
				break
			}
			all[k] = it.Val()
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("store: redis list %s: %w", bucket, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return eachSorted(all, fn)
}

// globEscape quotes the characters Redis's MATCH patterns give a meaning.
func globEscape(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[]\^-`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// eachSorted calls fn for every entry of all in key order.
func eachSorted(all map[string]string, fn func(key string, value []byte) error) error {
	keys := make([]string, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := fn(k, []byte(all[k])); err != nil {
			return err
		}
	}
	return nil
}

// swapScript is Swap in one atomic step. ARGV: field, expect-absent flag, old, delete flag, new.
var swapScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
  if cur then return 0 end
elseif (not cur) or cur ~= ARGV[3] then
  return 0
end
if ARGV[4] == '1' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[5]) end
return 1
`)

// Swap replaces bucket/key with new only if it holds old (see Bolt.Swap).
func (r *Redis) Swap(bucket, key string, old, new []byte) error {
	return r.g.run(opSwap, bucket, func() error { return r.swap(bucket, key, old, new) })
}

func (r *Redis) swap(bucket, key string, old, new []byte) error {
	ctx, cancel := r.ctx()
	defer cancel()
	flag := func(b bool) string {
		if b {
			return "1"
		}
		return "0"
	}
	n, err := swapScript.Run(ctx, r.c, []string{r.prefix + bucket}, key, flag(old == nil), old, flag(new == nil), new).Int()
	if err != nil {
		return fmt.Errorf("store: redis swap %s: %w", bucket, err)
	}
	if n != 1 {
		return ErrConflict
	}
	return nil
}
