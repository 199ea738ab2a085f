package store

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisConfig configures the Redis backend.
type RedisConfig struct {
	// Addr is host:port of the Redis server. Required unless Sentinel is set.
	Addr string
	// Sentinel, if set, finds the master through Redis Sentinel (go-redis's failover
	// client) instead of Addr, and follows it across failovers.
	Sentinel *SentinelConfig
	// Username and Password authenticate (ACL); empty means none.
	Username string
	Password string
	// TLS, if set, is used for every connection. Default plain TCP.
	TLS *tls.Config
	// DB is the database number. Default 0.
	DB int
	// Prefix is put before every bucket's hash key. Default "moltgate:kv:".
	Prefix string
	// Stream is the key of the change stream every write appends to; its sequence counter is
	// <Stream>:seq. Default "moltgate:changes".
	Stream string
	// StreamMaxLen is about how many changes the stream keeps (XADD MAXLEN ~). A replica
	// further behind than that reloads in full. Default 100000.
	StreamMaxLen int64
	// Timeout bounds one operation, since the KV interface carries no context. Default 5s.
	Timeout time.Duration
}

// SentinelConfig names a master and the sentinels that know where it is.
type SentinelConfig struct {
	// MasterName is the name the sentinels monitor the master under. Required.
	MasterName string
	// Addrs are host:port of sentinels. At least one.
	Addrs []string
	// Replicas is how many replica Redis servers must have a write before it is acknowledged
	// (WAIT, within half the store's Timeout): replication is asynchronous, and a failover
	// promotes a replica, so a write only the old master had would be lost although answered.
	// A write they do not confirm in time fails with ErrNotReplicated. Default 1; negative:
	// do not wait (a failover may lose acknowledged writes).
	Replicas int
	// Username and Password authenticate to the sentinels; empty means none.
	Username string
	Password string
}

// Redis is the KV store on a Redis server, for many replicas sharing state: one hash per
// bucket (key <prefix><bucket>), fields are keys. It has the same semantics as Bolt: Get of a
// missing key is ErrNotFound, ForEach walks in key order, Swap is atomic (a Lua script).
//
// Every write that changes something also appends {seq, bucket, key} to the change stream,
// in the same Lua script, so the stream misses no write and holds none that did not happen:
// replicas follow it (Follower) to keep their views of the store current.
// It is safe for concurrent use.
type Redis struct {
	c       *redis.Client
	prefix  string
	stream  string
	seqKey  string
	maxLen  int64
	timeout time.Duration
	g       *guard
	// replicas must have a write before it is acknowledged (SentinelConfig.Replicas); 0: none.
	replicas int
}

// ErrNotReplicated is returned by a write the master took but not enough replica Redis
// servers confirmed in time (SentinelConfig.Replicas). Its outcome is unknown: it may survive
// a failover or not, so it was not acknowledged.
var ErrNotReplicated = errors.New("store: write not confirmed by the replica Redis servers")

// OpenRedis connects to cfg.Addr (or the master cfg.Sentinel names) and checks the server
// answers.
func OpenRedis(ctx context.Context, cfg RedisConfig) (*Redis, error) {
	if cfg.Addr == "" && cfg.Sentinel == nil {
		return nil, errors.New("store: redis: addr or sentinel required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "moltgate:kv:"
	}
	if cfg.Stream == "" {
		cfg.Stream = "moltgate:changes"
	}
	if cfg.StreamMaxLen <= 0 {
		cfg.StreamMaxLen = 100000
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	c, where := newRedisClient(cfg)
	r := &Redis{c: c, prefix: cfg.Prefix, stream: cfg.Stream, seqKey: cfg.Stream + ":seq", maxLen: cfg.StreamMaxLen,
		timeout: cfg.Timeout, g: newGuard(cfg.Timeout)}
	if s := cfg.Sentinel; s != nil {
		r.replicas = max(0, cmp.Or(s.Replicas, 1))
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("store: redis %s: %w", where, err)
	}
	return r, nil
}

// NewRedisClient returns the client cfg asks for (Addr, or the master Sentinel names, and
// the credentials, TLS and DB; the store's own fields are ignored), for what else follows the
// same Redis across failovers: the audit stream.
func NewRedisClient(cfg RedisConfig) *redis.Client {
	c, _ := newRedisClient(cfg)
	return c
}

// newRedisClient returns the client cfg asks for and how to name its server in errors.
// Context deadlines bound every command, so a blocked read of the change stream ends with
// the follower's context.
func newRedisClient(cfg RedisConfig) (*redis.Client, string) {
	if s := cfg.Sentinel; s != nil {
		opts := &redis.FailoverOptions{MasterName: s.MasterName, SentinelAddrs: s.Addrs,
			SentinelUsername: s.Username, SentinelPassword: s.Password, Username: cfg.Username, Password: cfg.Password,
			DB: cfg.DB, TLSConfig: cfg.TLS, DisableIdentity: true, ContextTimeoutEnabled: true}
		return redis.NewFailoverClient(opts), "sentinel master " + s.MasterName
	}
	opts := &redis.Options{Addr: cfg.Addr, Username: cfg.Username, Password: cfg.Password, DB: cfg.DB,
		TLSConfig: cfg.TLS, DisableIdentity: true, ContextTimeoutEnabled: true}
	return redis.NewClient(opts), cfg.Addr
}

// Client is the Redis client, for what else the replicas share on the same server (rate
// limits). Writes through it are not on the change stream.
func (r *Redis) Client() *redis.Client { return r.c }

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
		if _, err := r.write(ctx, putScript, bucket, r.changeArgs(bucket, key, value)); err != nil {
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
		if _, err := r.write(ctx, deleteScript, bucket, r.changeArgs(bucket, key)); err != nil {
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

// changed is the part of every write script that appends the change to the stream. KEYS:
// hash, sequence counter, stream; ARGV: stream length, bucket, field, then the script's own.
const changed = `
local function changed()
  local seq = redis.call('INCR', KEYS[2])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 's', seq, 'b', ARGV[2], 'k', ARGV[3])
  return seq
end
`

// putScript is Put and its change. ARGV[4]: the value.
var putScript = redis.NewScript(changed + `
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
return changed()
`)

// deleteScript is Delete, and its change if there was a field to delete.
var deleteScript = redis.NewScript(changed + `
if redis.call('HDEL', KEYS[1], ARGV[3]) == 1 then return changed() end
return 0
`)

// swapScript is Swap and its change in one atomic step. ARGV[4..]: expect-absent flag, old,
// delete flag, new. It returns 0 on a mismatch, else the change's sequence number.
var swapScript = redis.NewScript(changed + `
local cur = redis.call('HGET', KEYS[1], ARGV[3])
if ARGV[4] == '1' then
  if cur then return 0 end
elseif (not cur) or cur ~= ARGV[5] then
  return 0
end
if ARGV[6] == '1' then redis.call('HDEL', KEYS[1], ARGV[3]) else redis.call('HSET', KEYS[1], ARGV[3], ARGV[7]) end
return changed()
`)

// keys are the KEYS of a write script on bucket.
func (r *Redis) keys(bucket string) []string { return []string{r.prefix + bucket, r.seqKey, r.stream} }

// changeArgs are the ARGV of a write script on bucket/key, then the script's own.
func (r *Redis) changeArgs(bucket, key string, more ...any) []any {
	return append([]any{r.maxLen, bucket, key}, more...)
}

// write runs a write script on bucket and returns its answer: the change's sequence number,
// 0 when it changed nothing. When replicas must confirm writes, the script and WAIT go on one
// connection (WAIT counts the replicas that have this connection's writes), and a change they
// do not confirm in time is ErrNotReplicated.
func (r *Redis) write(ctx context.Context, s *redis.Script, bucket string, args []any) (int64, error) {
	if r.replicas == 0 {
		return s.Run(ctx, r.c, r.keys(bucket), args...).Int64()
	}
	conn := r.c.Conn()
	defer conn.Close()
	n, err := s.Run(ctx, conn, r.keys(bucket), args...).Int64()
	if err != nil || n == 0 {
		return n, err
	}
	got, err := conn.Wait(ctx, r.replicas, r.timeout/2).Result()
	if err != nil {
		return n, fmt.Errorf("%w: %w", ErrNotReplicated, err)
	}
	if got < int64(r.replicas) {
		return n, fmt.Errorf("%w: %d of %d confirmed within %v", ErrNotReplicated, got, r.replicas, r.timeout/2)
	}
	return n, nil
}

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
	n, err := r.write(ctx, swapScript, bucket, r.changeArgs(bucket, key, flag(old == nil), old, flag(new == nil), new))
	if err != nil {
		return fmt.Errorf("store: redis swap %s: %w", bucket, err)
	}
	if n == 0 {
		return ErrConflict
	}
	return nil
}
