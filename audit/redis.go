package audit

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis layout: one stream per replica, "moltgate:audit:<replica>". An entry's id is
// "<seq>-0" and its one field "e" is the event's JSON line, so the stream refuses a
// duplicate or out-of-order seq by itself. The archive's progress is in
// "moltgate:audit-archived:<replica>".
const (
	StreamPrefix   = "moltgate:audit:"
	archivedPrefix = "moltgate:audit-archived:"
	ArchiveGroup   = "moltgate-archive"
)

// StreamKey is the stream of replica's chain.
func StreamKey(replica string) string { return StreamPrefix + replica }

// appendScript adds events to a stream atomically, after checking that they continue what
// the stream holds (its last-generated-id, which survives trimming but not a restart with
// no data or a flush). KEYS[1] stream; ARGV[1] floor; then seq, line pairs. It returns the
// highest seq the stream holds: below the first seq - 1, nothing was added (a gap the
// caller fills by sending again from the spool).
var appendScript = redis.NewScript(`
local held = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      held = tonumber(string.match(info[i+1], '^(%d+)'))
    end
  end
end
if #ARGV < 3 then return held end
local floor = tonumber(ARGV[1])
local first = tonumber(ARGV[2])
if held < first - 1 and first - 1 > floor then return held end
for i = 2, #ARGV, 2 do
  local s = tonumber(ARGV[i])
  if s > held then
    redis.call('XADD', KEYS[1], ARGV[i] .. '-0', 'e', ARGV[i+1])
    held = s
  end
end
return held
`)

// RedisSink ships a replica's chain to its Redis stream.
type RedisSink struct {
	rdb      redis.UniversalClient
	replica  string
	mu       sync.Mutex
	archived uint64 // highest value seen: the archive never shrinks, even if Redis forgets
}

var _ Sink = (*RedisSink)(nil)

// NewRedisSink returns a sink writing replica's chain to StreamKey(replica).
func NewRedisSink(rdb redis.UniversalClient, replica string) *RedisSink {
	return &RedisSink{rdb: rdb, replica: replica}
}

// Name implements Sink.
func (s *RedisSink) Name() string { return "redis" }

// Write implements Sink.
func (s *RedisSink) Write(ctx context.Context, floor uint64, recs []Record) (uint64, error) {
	args := make([]any, 0, 1+2*len(recs))
	args = append(args, floor)
	for _, r := range recs {
		args = append(args, r.Seq, r.Line)
	}
	held, err := appendScript.Run(ctx, s.rdb, []string{StreamKey(s.replica)}, args...).Int64()
	if err != nil {
		return 0, fmt.Errorf("audit: redis: append to %s: %w", StreamKey(s.replica), err)
	}
	return uint64(held), nil
}

// Archived implements Sink: what the archive worker recorded as archived.
func (s *RedisSink) Archived(ctx context.Context) (uint64, error) {
	v, err := s.rdb.Get(ctx, archivedPrefix+s.replica).Uint64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("audit: redis: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.archived = max(s.archived, v)
	return s.archived, nil
}

// Drainer moves every replica's stream into an archive, through the consumer group
// ArchiveGroup: it takes over entries stuck with a consumer that died (XAUTOCLAIM), archives
// them in order, acknowledges and trims what the archive holds, and records the archive's
// progress for the replicas' spools.
type Drainer struct {
	rdb      redis.UniversalClient
	arch     *Archive
	consumer string
	log      *slog.Logger
	// MinIdle is how long an entry stays with another consumer before it is taken over.
	MinIdle time.Duration
	// Count bounds the events read (and so archived in one segment) per round.
	Count int64
}

// NewDrainer returns a Drainer archiving into arch as consumer (stable across restarts, so
// its own pending entries are found again).
func NewDrainer(rdb redis.UniversalClient, arch *Archive, consumer string, logger *slog.Logger) *Drainer {
	return &Drainer{rdb: rdb, arch: arch, consumer: consumer, log: logger, MinIdle: 30 * time.Second, Count: 50000}
}

// Run drains every interval until ctx ends.
func (d *Drainer) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := d.DrainOnce(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("audit: archiving from redis failed; will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// DrainOnce archives what every stream holds now and returns how many events it archived.
func (d *Drainer) DrainOnce(ctx context.Context) (int, error) {
	var keys []string
	iter := d.rdb.ScanType(ctx, 0, StreamPrefix+"*", 100, "stream").Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return 0, fmt.Errorf("audit: redis: scan: %w", err)
	}
	slices.Sort(keys)
	total := 0
	var errs []error
	for _, k := range keys {
		n, err := d.drainStream(ctx, k)
		total += n
		errs = append(errs, err)
	}
	return total, errors.Join(errs...)
}

func (d *Drainer) drainStream(ctx context.Context, key string) (int, error) {
	replica := strings.TrimPrefix(key, StreamPrefix)
	total := 0
	for ctx.Err() == nil {
		msgs, err := d.read(ctx, key)
		if err != nil && redis.HasErrorPrefix(err, "NOGROUP") {
			// A new stream, or Redis restarted empty: the group starts at the beginning and
			// the archive skips what it has.
			if err := d.rdb.XGroupCreateMkStream(ctx, key, ArchiveGroup, "0").Err(); err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
				return total, fmt.Errorf("audit: redis: create group on %s: %w", key, err)
			}
			continue
		}
		if err != nil {
			return total, fmt.Errorf("audit: redis: read %s: %w", key, err)
		}
		held, _ := d.arch.Head(replica)
		if len(msgs) > 0 {
			recs := make([]Record, 0, len(msgs))
			for _, m := range msgs {
				seq, _ := entrySeq(m.ID)
				line, _ := m.Values["e"].(string)
				recs = append(recs, Record{Seq: seq, Line: []byte(line)})
			}
			before := held
			held, err = d.arch.Append(replica, recs)
			if err != nil {
				return total, fmt.Errorf("audit: archive %s: %w", key, err)
			}
			d.arch.m.archived.WithLabelValues("redis").Add(float64(held - before))
			total += int(held - before)
			var ack []string
			for _, m := range msgs {
				if s, _ := entrySeq(m.ID); s <= held {
					ack = append(ack, m.ID)
				}
			}
			if len(ack) > 0 {
				if err := d.rdb.XAck(ctx, key, ArchiveGroup, ack...).Err(); err != nil {
					return total, fmt.Errorf("audit: redis: ack: %w", err)
				}
			}
			if last, _ := entrySeq(msgs[len(msgs)-1].ID); held < last {
				d.log.Warn("audit: stream does not continue the archive; waiting for the replica to send the missing events",
					"stream", key, "archive_holds", held, "stream_from", recs[0].Seq)
				msgs = nil
			}
		}
		if held > 0 {
			pipe := d.rdb.Pipeline()
			pipe.XTrimMinID(ctx, key, strconv.FormatUint(held+1, 10)+"-0")
			pipe.Set(ctx, archivedPrefix+replica, held, 0)
			if _, err := pipe.Exec(ctx); err != nil {
				return total, fmt.Errorf("audit: redis: trim %s: %w", key, err)
			}
		}
		if int64(len(msgs)) < d.Count {
			return total, nil
		}
	}
	return total, ctx.Err()
}

// read returns, in seq order and once each, the entries this consumer holds unacknowledged,
// those stuck with others past MinIdle, and new ones.
func (d *Drainer) read(ctx context.Context, key string) ([]redis.XMessage, error) {
	var all []redis.XMessage
	for _, id := range []string{"0", "claim", ">"} {
		var msgs []redis.XMessage
		var err error
		if id == "claim" {
			msgs, _, err = d.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: key, Group: ArchiveGroup,
				Consumer: d.consumer, MinIdle: d.MinIdle, Start: "0-0", Count: d.Count}).Result()
		} else {
			var res []redis.XStream
			res, err = d.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: ArchiveGroup, Consumer: d.consumer,
				Streams: []string{key, id}, Count: d.Count, Block: -1}).Result()
			if len(res) > 0 {
				msgs = res[0].Messages
			}
		}
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		all = append(all, msgs...)
	}
	slices.SortFunc(all, func(a, b redis.XMessage) int {
		x, _ := entrySeq(a.ID)
		y, _ := entrySeq(b.ID)
		return cmp.Compare(x, y)
	})
	return slices.CompactFunc(all, func(a, b redis.XMessage) bool { return a.ID == b.ID }), nil
}

func entrySeq(id string) (uint64, error) {
	ms, _, _ := strings.Cut(id, "-")
	return strconv.ParseUint(ms, 10, 64)
}

// Streams returns the keys of every replica's stream on rdb, sorted.
func Streams(ctx context.Context, rdb redis.UniversalClient) ([]string, error) {
	var keys []string
	it := rdb.ScanType(ctx, 0, StreamPrefix+"*", 1000, "stream").Iterator()
	for it.Next(ctx) {
		keys = append(keys, it.Val())
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("audit: redis: %w", err)
	}
	slices.Sort(keys)
	return slices.Compact(keys), nil
}

// VerifyStream checks the chain in a replica's stream. The stream holds only what is not
// archived yet, so its first entry must follow the archive's recorded progress; every later
// one must follow its predecessor.
func VerifyStream(ctx context.Context, rdb redis.UniversalClient, key string, opts VerifyOptions) (Report, error) {
	c := newChain(opts, 0, "", false)
	archived, err := rdb.Get(ctx, archivedPrefix+strings.TrimPrefix(key, StreamPrefix)).Uint64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return Report{}, fmt.Errorf("audit: redis: %w", err)
	}
	start, line := "-", 0
	for {
		msgs, err := rdb.XRangeN(ctx, key, start, "+", 10000).Result()
		if err != nil {
			return c.rep, fmt.Errorf("audit: redis: %w", err)
		}
		for _, m := range msgs {
			line++
			seq, err := entrySeq(m.ID)
			if line == 1 && err == nil && seq > archived+1 {
				return c.rep, &VerifyError{File: key, Line: 1, Seq: archived + 1,
					Why: fmt.Sprintf("stream starts at seq %d but the archive holds only up to %d (events deleted)", seq, archived)}
			}
			ev, _ := m.Values["e"].(string)
			if _, err := c.add(key, line, []byte(ev)); err != nil {
				return c.rep, err
			}
			var ve *VerifyError
			if err != nil || seq != c.seq {
				ve = &VerifyError{File: key, Line: line, Seq: c.seq, Why: "entry id " + m.ID + " does not match its event's seq"}
				return c.rep, ve
			}
		}
		if len(msgs) < 10000 {
			return c.rep, nil
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
}

// queryStreams calls fn with the events of every replica's stream, each stream in order,
// until fn returns false.
func queryStreams(ctx context.Context, rdb redis.UniversalClient, fn func(Event) bool) (bool, error) {
	keys, err := Streams(ctx, rdb)
	if err != nil {
		return false, err
	}
	for _, key := range keys {
		start := "-"
		for {
			msgs, err := rdb.XRangeN(ctx, key, start, "+", 10000).Result()
			if err != nil {
				return false, fmt.Errorf("audit: redis: %w", err)
			}
			for _, m := range msgs {
				raw, _ := m.Values["e"].(string)
				var e Event
				if err := json.Unmarshal([]byte(raw), &e); err != nil {
					return false, fmt.Errorf("audit: %s entry %s: unreadable event: %w", key, m.ID, err)
				}
				if !fn(e) {
					return false, nil
				}
			}
			if len(msgs) < 10000 {
				break
			}
			start = "(" + msgs[len(msgs)-1].ID
		}
	}
	return true, nil
}
