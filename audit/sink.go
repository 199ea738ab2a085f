package audit

import (
	"context"
	"log/slog"
	"time"
)

// Record is one event as stored: its seq and its JSON line (no newline). Sinks store the
// line as it is, so the chain verifies wherever it lands.
type Record struct {
	Seq  uint64
	Line []byte
}

// Sink receives a replica's chain in order from the spool.
type Sink interface {
	// Name labels the sink in logs and metrics.
	Name() string
	// Write stores recs (consecutive seqs) after the events the sink holds, skipping those
	// it holds already, and returns the highest seq it holds afterwards. Every event at or
	// below floor is archived for good, so the sink may start its chain right after floor.
	// A result below recs[0].Seq-1 means the sink lost events (say, Redis restarted empty):
	// the caller sends again from there. With no recs it only reports what it holds.
	Write(ctx context.Context, floor uint64, recs []Record) (held uint64, err error)
	// Archived returns the highest seq that is in the archive: the spool may delete up to it.
	Archived(ctx context.Context) (uint64, error)
}

// Batcher is an optional Sink interface: ship at most Max events per Write, and, unless
// that many are waiting, no more often than Every. Default 5000 and at once.
type Batcher interface {
	Batch() (max int, every time.Duration)
}

// shipper moves events from the spool to one sink.
type shipper struct {
	l     *FileLog
	sink  Sink
	wake  chan struct{}
	max   int
	every time.Duration
	pos   uint64  // the sink holds every event up to pos
	read  readPos // where the last read of the spool stopped
	known bool    // pos has been read from the sink
}

func (l *FileLog) newShipper(s Sink) *shipper {
	sh := &shipper{l: l, sink: s, wake: make(chan struct{}, 1), max: 5000}
	if b, ok := s.(Batcher); ok {
		sh.max, sh.every = b.Batch()
	}
	l.mu.Lock()
	l.wake = append(l.wake, sh.wake)
	l.mu.Unlock()
	return sh
}

// run ships until ctx ends, then tries for a few seconds to ship what is left.
func (sh *shipper) run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := time.Time{}
	nextTrim := time.Time{}
	for {
		ok := true
		if sh.every == 0 || time.Since(last) >= sh.every || sh.waiting() >= uint64(sh.max) {
			ok = sh.shipAll(ctx)
			last = time.Now()
		}
		if ok && time.Now().After(nextTrim) {
			sh.trim(ctx)
			nextTrim = time.Now().Add(time.Second)
		}
		wait := tick.C
		var retry <-chan time.Time
		if !ok {
			retry = time.After(backoff)
			backoff = min(2*backoff, 5*time.Second)
			wait = nil
		} else {
			backoff = 50 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			sh.finish()
			return
		case <-sh.wake:
		case <-wait:
			// Idle or not, ask the sink again what it holds: a Redis restarted empty or
			// flushed while nothing new was emitted would otherwise miss events (and show no
			// lag) until the next Emit.
			sh.known = false
		case <-retry:
		}
	}
}

// finish ships what the spool holds at shutdown, for a bounded time; what it misses stays
// in the spool for the next start.
func (sh *shipper) finish() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if sh.every == 0 {
		sh.shipAll(ctx)
	}
}

func (sh *shipper) waiting() uint64 {
	seq, _ := sh.l.Head()
	if seq < sh.pos {
		return 0
	}
	return seq - sh.pos
}

// shipAll sends batches until the sink holds the head; false on a failure.
func (sh *shipper) shipAll(ctx context.Context) bool {
	for ctx.Err() == nil {
		snap := sh.l.snapshot()
		if !sh.known {
			held, err := sh.sink.Write(ctx, snap.floor, nil)
			if err != nil {
				sh.failed(ctx, err)
				return false
			}
			sh.pos, sh.known = max(held, snap.floor), true
		}
		sh.pos = max(sh.pos, snap.floor)
		sh.l.m.sinkLag.WithLabelValues(sh.sink.Name()).Set(float64(snap.seq - min(sh.pos, snap.seq)))
		if sh.pos >= snap.seq {
			return true
		}
		recs, err := sh.l.readRange(snap, sh.pos+1, sh.max, 32<<20, &sh.read)
		if err != nil {
			sh.failed(ctx, err)
			return false
		}
		if len(recs) == 0 {
			return true
		}
		held, err := sh.sink.Write(ctx, snap.floor, recs)
		if err != nil {
			sh.failed(ctx, err)
			return false
		}
		if held < recs[0].Seq-1 {
			sh.l.log.Warn("audit: sink lost events; sending them again from the spool",
				"sink", sh.sink.Name(), "sink_holds", held, "resend_from", max(held, snap.floor)+1)
		}
		sh.pos = max(held, snap.floor)
	}
	return false
}

func (sh *shipper) failed(ctx context.Context, err error) {
	sh.known = false // read the sink's position again: it may have been restarted empty
	sh.l.m.sinkErrors.WithLabelValues(sh.sink.Name()).Inc()
	// The lag keeps growing while the sink is down: measured from what it last held.
	if seq, _ := sh.l.Head(); seq > sh.pos {
		sh.l.m.sinkLag.WithLabelValues(sh.sink.Name()).Set(float64(seq - sh.pos))
	}
	if ctx.Err() == nil {
		sh.l.log.LogAttrs(ctx, slog.LevelWarn, "audit: sink write failed; events wait in the spool",
			slog.String("sink", sh.sink.Name()), slog.Any("err", err))
	}
}

func (sh *shipper) trim(ctx context.Context) {
	a, err := sh.sink.Archived(ctx)
	if err != nil {
		return
	}
	if err := sh.l.trimFor(sh, a); err != nil {
		sh.l.log.Error("audit: trimming the spool failed", "err", err)
	}
}
