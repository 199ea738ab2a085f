package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// ErrStale is returned by Follower.Fresh when the view has not been confirmed current
// within the staleness bound: whoever decides on it must refuse instead.
var ErrStale = errors.New("store: view not confirmed fresh")

// DefaultMaxStaleness is FollowConfig.MaxStaleness when it is zero.
const DefaultMaxStaleness = 5 * time.Second

// Change is one write to the store, as the change stream carries it.
type Change struct {
	// Seq numbers the changes of the store from 1, without gaps.
	Seq    uint64
	Bucket string
	Key    string
}

// FollowConfig configures a Follower.
type FollowConfig struct {
	// MaxStaleness is how long a confirmed view stays fresh: past it without a new
	// confirmation, Fresh fails. Default DefaultMaxStaleness (5s).
	MaxStaleness time.Duration
	// Apply brings the view up to date with one change, by reading bucket/key from the store
	// again (the change names what changed, not how). It may be called again for a change
	// it has seen, so it must be idempotent. Required.
	Apply func(ctx context.Context, c Change) error
	// Reload reads the whole view again: at a gap in the stream (it was trimmed past this
	// replica, or the server lost writes). Required.
	Reload func(ctx context.Context) error
	// Logger reports lost and regained contact. Required.
	Logger *slog.Logger
}

// Follower keeps a replica's view of the store current from the change stream, and knows
// how current it is: Fresh is an atomic compare, cheap enough for every request.
//
// The view is confirmed as of the moment a read of the stream was sent, once every change
// that read returned is applied; a read that returns nothing new confirms the view too.
// While the stream cannot be read, the view ages and Fresh fails after MaxStaleness.
type Follower struct {
	r     *Redis
	cfg   FollowConfig
	block time.Duration // longest wait for a change between confirmations

	confirmed atomic.Int64 // unix nanoseconds of the last confirmation
	seq       atomic.Uint64
	head      atomic.Uint64
	reloads   atomic.Uint64
	applied   atomic.Uint64

	last   string // stream id of the last change applied; Run's own
	reload bool   // Run's own
}

// followBatch bounds the changes one read returns.
const followBatch = 512

// Follow returns a Follower of r's change stream, positioned at its end: the caller loads
// its view after this returns, and Run applies every change from here on.
func (r *Redis) Follow(ctx context.Context, cfg FollowConfig) (*Follower, error) {
	if cfg.Apply == nil || cfg.Reload == nil || cfg.Logger == nil {
		return nil, errors.New("store: follow: Apply, Reload and Logger are required")
	}
	if cfg.MaxStaleness <= 0 {
		cfg.MaxStaleness = DefaultMaxStaleness
	}
	f := &Follower{r: r, cfg: cfg, block: min(cfg.MaxStaleness/5, time.Second)}
	sent := time.Now()
	seq, last, err := f.position(ctx)
	if err != nil {
		return nil, err
	}
	f.seq.Store(seq)
	f.head.Store(seq)
	f.last = last
	f.confirmed.Store(sent.UnixNano())
	return f, nil
}

// Fresh returns nil while the view was confirmed within MaxStaleness, else an error that
// matches ErrStale and says how old the view is.
func (f *Follower) Fresh() error {
	age := time.Now().UnixNano() - f.confirmed.Load()
	if age <= int64(f.cfg.MaxStaleness) {
		return nil
	}
	return fmt.Errorf("%w: last confirmed %s ago (max_staleness %s)", ErrStale,
		time.Duration(age).Round(time.Millisecond), f.cfg.MaxStaleness)
}

// Confirmed is when the view was last confirmed current.
func (f *Follower) Confirmed() time.Time { return time.Unix(0, f.confirmed.Load()) }

// Run follows the stream until ctx ends. Errors (the server gone, a failed Apply) are
// retried with a backoff, from the last change applied; it returns only ctx's error.
func (f *Follower) Run(ctx context.Context) error {
	const minWait, maxWait = 50 * time.Millisecond, time.Second
	wait, failing := minWait, false
	for {
		err := f.step(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case err == nil && failing:
			failing, wait = false, minWait
			f.cfg.Logger.Info("cluster: change stream read again; view confirmed", "seq", f.seq.Load())
		case err != nil && !failing:
			failing = true
			f.cfg.Logger.Error("cluster: change stream unreadable; the view ages and fails closed past max_staleness",
				"err", err, "max_staleness", f.cfg.MaxStaleness.String())
		}
		if err == nil {
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, maxWait)
	}
}

// step reads the stream once, applies what it returns, and either confirms the view and
// waits for the next change, or notes that a full reload is needed.
func (f *Follower) step(ctx context.Context) error {
	sent := time.Now()
	if f.reload {
		seq, last, err := f.position(ctx)
		if err != nil {
			return err
		}
		if err := f.cfg.Reload(ctx); err != nil {
			return fmt.Errorf("store: follow: reload: %w", err)
		}
		f.reloads.Add(1)
		f.seq.Store(seq)
		f.head.Store(seq)
		f.last, f.reload = last, false
		f.confirm(sent)
		return nil
	}
	head, msgs, err := f.poll(ctx)
	if err != nil {
		return err
	}
	f.head.Store(head)
	if head < f.seq.Load() {
		// The server's counter went back: it lost writes (a restart without them, a
		// failover to a replica that had not got them). What it has now is the truth.
		f.reload = true
		return nil
	}
	for _, m := range msgs {
		c, err := change(m)
		if err != nil {
			return err
		}
		if c.Seq != f.seq.Load()+1 {
			f.reload = true // a gap: the stream was trimmed past us
			return nil
		}
		if err := f.cfg.Apply(ctx, c); err != nil {
			return fmt.Errorf("store: follow: apply %d (%s): %w", c.Seq, c.Bucket, err)
		}
		f.applied.Add(1)
		f.seq.Store(c.Seq)
		f.last = m.ID
	}
	if len(msgs) == followBatch {
		return nil // more to read before the view is current
	}
	if f.seq.Load() < head {
		f.reload = true // the counter is ahead of what the stream still holds
		return nil
	}
	f.confirm(sent)
	// Wait for a change after the last one, or for the next confirmation. What the read
	// returns is read again by the next step, with the counter, which is what confirms it.
	err = f.r.c.XRead(ctx, &redis.XReadArgs{Streams: []string{f.r.stream, f.last}, Count: 1, Block: f.block}).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("store: follow: wait: %w", err)
	}
	return nil
}

func (f *Follower) confirm(sent time.Time) {
	f.confirmed.Store(sent.UnixNano())
}

// position is the counter and the id of the stream's last entry, read together.
func (f *Follower) position(ctx context.Context) (uint64, string, error) {
	seq, msgs, err := f.read(ctx, func(ctx context.Context, p redis.Pipeliner) *redis.XMessageSliceCmd {
		return p.XRevRangeN(ctx, f.r.stream, "+", "-", 1)
	})
	if err != nil || len(msgs) == 0 {
		return seq, "0-0", err
	}
	return seq, msgs[0].ID, nil
}

// poll reads the counter and the changes after the last one applied, together.
func (f *Follower) poll(ctx context.Context) (uint64, []redis.XMessage, error) {
	return f.read(ctx, func(ctx context.Context, p redis.Pipeliner) *redis.XMessageSliceCmd {
		return p.XRangeN(ctx, f.r.stream, "("+f.last, "+", followBatch)
	})
}

// read runs GET of the counter and one read of the stream in one MULTI/EXEC, so the two
// agree: no write lands between them.
func (f *Follower) read(ctx context.Context, stream func(context.Context, redis.Pipeliner) *redis.XMessageSliceCmd) (uint64, []redis.XMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, f.r.timeout)
	defer cancel()
	var get *redis.StringCmd
	var msgs *redis.XMessageSliceCmd
	_, err := f.r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		get, msgs = p.Get(ctx, f.r.seqKey), stream(ctx, p)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, nil, fmt.Errorf("store: follow: read: %w", err)
	}
	seq, err := counter(get)
	return seq, msgs.Val(), err
}

// counter is the value of a GET of the sequence counter: 0 when it is absent.
func counter(get *redis.StringCmd) (uint64, error) {
	s, err := get.Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: follow: counter: %w", err)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("store: follow: counter %q: %w", s, err)
	}
	return n, nil
}

// change decodes one stream entry.
func change(m redis.XMessage) (Change, error) {
	s, _ := m.Values["s"].(string)
	b, _ := m.Values["b"].(string)
	k, _ := m.Values["k"].(string)
	seq, err := strconv.ParseUint(s, 10, 64)
	if err != nil || b == "" {
		return Change{}, fmt.Errorf("store: follow: malformed change %s", m.ID)
	}
	return Change{Seq: seq, Bucket: b, Key: k}, nil
}

var (
	viewAgeDesc = prometheus.NewDesc("moltgate_cluster_view_age_seconds",
		"Time since this replica last confirmed its view of the shared store current.", nil, nil)
	viewConfirmedDesc = prometheus.NewDesc("moltgate_cluster_view_confirmed_timestamp_seconds",
		"When this replica last confirmed its view of the shared store current (Unix time).", nil, nil)
	streamLagDesc = prometheus.NewDesc("moltgate_cluster_stream_lag_changes",
		"Changes in the shared store this replica had seen but not applied at its last read.", nil, nil)
	reloadsDesc = prometheus.NewDesc("moltgate_cluster_full_reloads_total",
		"Full reloads of this replica's view (a gap in the change stream, or writes lost by the server).", nil, nil)
	appliedDesc = prometheus.NewDesc("moltgate_cluster_changes_applied_total",
		"Changes from the change stream applied to this replica's view.", nil, nil)
)

// Describe implements prometheus.Collector.
func (f *Follower) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{viewAgeDesc, viewConfirmedDesc, streamLagDesc, reloadsDesc, appliedDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (f *Follower) Collect(ch chan<- prometheus.Metric) {
	confirmed := f.Confirmed()
	lag := f.head.Load() - min(f.seq.Load(), f.head.Load())
	ch <- prometheus.MustNewConstMetric(viewAgeDesc, prometheus.GaugeValue, time.Since(confirmed).Seconds())
	ch <- prometheus.MustNewConstMetric(viewConfirmedDesc, prometheus.GaugeValue, float64(confirmed.UnixNano())/1e9)
	ch <- prometheus.MustNewConstMetric(streamLagDesc, prometheus.GaugeValue, float64(lag))
	ch <- prometheus.MustNewConstMetric(reloadsDesc, prometheus.CounterValue, float64(f.reloads.Load()))
	ch <- prometheus.MustNewConstMetric(appliedDesc, prometheus.CounterValue, float64(f.applied.Load()))
}
