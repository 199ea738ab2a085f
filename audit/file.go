package audit

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
)

// ErrSpoolFull is returned by Emit and Ready when the spool holds SpoolMaxBytes of events no
// archive has acknowledged yet. The proxy refuses requests while it lasts: fail closed.
var ErrSpoolFull = errors.New("audit: spool full: events are not reaching the archive")

// ErrClosed is returned by Emit after Close.
var ErrClosed = errors.New("audit: log is closed")

// FileLog is the audit spool and the file sink: it appends events to JSON-lines segment
// files (events-NNNNNN.jsonl) in a directory, one chain across all files, fsyncs them in
// batches, ships them in order to its sinks, and deletes a segment only once every sink's
// archive holds all of it. It is safe for concurrent use.
type FileLog struct {
	cfg FileConfig
	log *slog.Logger
	m   *metrics

	trimMu   sync.Mutex // one trim at a time (only trim removes segments, from the front); Close waits for it
	mu       sync.Mutex
	f        *os.File
	segs     []segment // oldest first; the last is the file being written
	bytes    int64     // bytes in all segments
	seq      uint64
	prev     string
	floor    floorMark // the last event deleted from the spool (zero: none)
	dirty    bool
	alarmed  bool
	full     bool
	cpSeq    uint64 // seq of the last checkpoint
	cpTime   time.Time
	syncDone *syncWait // released by the next fsync that covers every event written so far
	werr     error     // a failed rollover: the spool cannot take events until restarted
	wake     []chan struct{}
	archived map[*shipper]uint64 // what each sink's archive holds

	syncReq chan struct{}
	fsync   func(*os.File) error  // (*os.File).Sync; a test injects failures here
	ready   atomic.Pointer[error] // what Ready returns; see readyLocked
}

type segment struct {
	index       int
	first, last uint64 // seqs; first == 0: empty
	size        int64
	firstPrev   string // the prev of the first event (read at open)
	lastHash    string // the hash of the last event
}

// floorMark is persisted in spool.floor: the spool's chain continues after it.
type floorMark struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// FileConfig configures a FileLog. The zero value of each field is its documented default.
type FileConfig struct {
	// Dir holds the spool segments; created with mode 0700.
	Dir string
	// MaxFileBytes rolls over to a new segment past this size. Default 64 MiB, or
	// SpoolMaxBytes/16 if smaller.
	MaxFileBytes int64
	// SpoolMaxBytes bounds the events held that no archive acknowledged. At 80% an alarm is
	// logged and metered; at 100% Emit fails with ErrSpoolFull. Default 1 GiB.
	SpoolMaxBytes int64
	// Replica names this chain (one chain per replica). Default "local".
	Replica string
	// Durable makes Emit wait for the fsync that covers its event (group commit) before it
	// returns. Default off: Emit returns once the event is written (it survives a crash of
	// the process, not of the machine, until the next batched fsync).
	Durable bool
	// Signer signs checkpoints. Default none: no checkpoints are written.
	Signer ed25519.PrivateKey
	// CheckpointEvery writes a checkpoint after this many events. Default 10000.
	CheckpointEvery int
	// CheckpointInterval writes a checkpoint this long after the last one if events came
	// since. Default 1 minute.
	CheckpointInterval time.Duration
	// Sinks receive every event in order; the spool is trimmed by their Archived. Default none:
	// the spool files are the only copy and are never deleted.
	Sinks []Sink
	// ArchiveDir is the local archive this spool's events reach, read by Query after it has
	// trimmed them. Default none: Query reads the spool only.
	ArchiveDir string
	// Metrics registers the audit metrics. Default: not registered.
	Metrics prometheus.Registerer
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// OpenFile opens the spool in cfg.Dir and continues its chain. A last line cut short by a
// crash (never acknowledged: Emit had not returned) is removed and logged.
func OpenFile(cfg FileConfig, logger *slog.Logger) (*FileLog, error) {
	if cfg.SpoolMaxBytes <= 0 {
		cfg.SpoolMaxBytes = 1 << 30
	}
	if cfg.MaxFileBytes <= 0 {
		// The segment being written is never trimmed: keep it a small part of the bound,
		// or a full spool could never drain below it.
		cfg.MaxFileBytes = min(64<<20, cfg.SpoolMaxBytes/16)
	}
	if cfg.Replica == "" {
		cfg.Replica = "local"
	}
	if cfg.CheckpointEvery <= 0 {
		cfg.CheckpointEvery = 10000
	}
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	l := &FileLog{cfg: cfg, log: logger, m: m, prev: genesis, syncDone: newSyncWait(), fsync: (*os.File).Sync,
		syncReq: make(chan struct{}, 1), cpTime: cfg.Now()}
	if err := l.readFloor(); err != nil {
		return nil, err
	}
	l.seq, l.prev = l.floor.Seq, cmp.Or(l.floor.Hash, genesis)
	if err := l.loadSegments(); err != nil {
		return nil, err
	}
	l.cpSeq = l.seq
	if n := len(l.segs); n > 0 {
		err = l.openIndex(l.segs[n-1].index, true)
	} else {
		err = l.openIndex(1, false)
	}
	if err != nil {
		return nil, err
	}
	l.m.spoolMax.Set(float64(cfg.SpoolMaxBytes))
	l.m.spoolBytes.Set(float64(l.bytes))
	l.m.spoolEvents.Set(float64(l.depthLocked()))
	return l, nil
}

func (l *FileLog) readFloor() error {
	data, err := os.ReadFile(filepath.Join(l.cfg.Dir, "spool.floor"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if err := json.Unmarshal(data, &l.floor); err != nil {
		return fmt.Errorf("audit: spool.floor: %w", err)
	}
	return nil
}

// loadSegments finds the spool's segments, their seqs and the chain head.
func (l *FileLog) loadSegments() error {
	files, err := eventFiles(l.cfg.Dir)
	if err != nil {
		return err
	}
	if len(files) > 0 {
		if err := l.cutPartial(files[len(files)-1]); err != nil {
			return err
		}
	}
	for _, path := range files {
		s := segment{}
		if _, err := fmt.Sscanf(filepath.Base(path), "events-%06d.jsonl", &s.index); err != nil {
			return fmt.Errorf("audit: %s: unexpected name", path)
		}
		if err := firstSeq(path, &s); err != nil {
			return err
		}
		l.segs = append(l.segs, s)
		l.bytes += s.size
	}
	next, nextPrev := uint64(0), "" // first seq, and its prev, of the next non-empty segment
	for i := len(l.segs) - 1; i >= 0; i-- {
		s := &l.segs[i]
		if s.first == 0 {
			continue
		}
		if next != 0 {
			s.last, s.lastHash = next-1, nextPrev
		} else {
			e, err := lastEvent(l.segPath(s.index))
			if err != nil {
				return err
			}
			s.last, s.lastHash, l.seq, l.prev = e.Seq, e.Hash, e.Seq, e.Hash
		}
		next, nextPrev = s.first, s.firstPrev
	}
	return nil
}

// cutPartial removes a last line cut short by a crash.
func (l *FileLog) cutPartial(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if n := len(data); n > 0 && data[n-1] != '\n' {
		cut := bytes.LastIndexByte(data, '\n') + 1
		l.log.Warn("audit: removing an incomplete last event left by a crash", "file", path, "bytes", n-cut)
		if err := os.Truncate(path, int64(cut)); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
	}
	return nil
}

// firstSeq reads the size and first event of a segment.
func firstSeq(path string, s *segment) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	s.size = fi.Size()
	if s.size == 0 {
		return nil
	}
	line, _ := bufio.NewReaderSize(f, 64<<10).ReadBytes('\n')
	var e struct {
		Seq  uint64 `json:"seq"`
		Prev string `json:"prev"`
	}
	if err := json.Unmarshal(line, &e); err != nil || e.Seq == 0 {
		return fmt.Errorf("audit: %s: first event unreadable", path)
	}
	s.first, s.firstPrev = e.Seq, e.Prev
	return nil
}

// lineSeq reads the seq of an encoded event without decoding all of it.
func lineSeq(line []byte) (uint64, bool) {
	i := bytes.Index(line, []byte(`"seq":`))
	if i < 0 {
		return 0, false
	}
	rest := line[i+6:]
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	n, err := strconv.ParseUint(string(rest[:j]), 10, 64)
	return n, err == nil
}

func (l *FileLog) segPath(i int) string {
	return filepath.Join(l.cfg.Dir, fmt.Sprintf("events-%06d.jsonl", i))
}

// openIndex opens segment i for appending; a new one is added to segs.
func (l *FileLog) openIndex(i int, existing bool) error {
	f, err := os.OpenFile(l.segPath(i), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if !existing {
		l.segs = append(l.segs, segment{index: i})
	}
	l.f = f
	l.readyLocked()
	return nil
}

// Emit appends e to the chain. When it returns nil the event is in the spool file (and, with
// Durable, fsynced). It fails with ErrSpoolFull rather than drop an event it cannot keep.
func (l *FileLog) Emit(ctx context.Context, e Event) error {
	start := time.Now()
	l.mu.Lock()
	if l.f == nil {
		l.mu.Unlock()
		return ErrClosed
	}
	typ := e.Type
	if err := l.appendLocked(&e); err != nil {
		l.mu.Unlock()
		l.m.emitErrors.Inc()
		return err
	}
	if l.cfg.Signer != nil && int(l.seq-l.cpSeq) >= l.cfg.CheckpointEvery {
		if err := l.checkpointLocked(); err != nil {
			l.log.Error("audit: checkpoint failed", "err", err)
		}
	}
	var done *syncWait
	if l.cfg.Durable {
		done = l.syncDone
	}
	l.mu.Unlock()
	l.m.event(typ).Inc()
	if done != nil {
		select {
		case l.syncReq <- struct{}{}:
		default:
		}
		select {
		case <-done.ch:
			if done.err != nil { // written, but not known to be on disk
				l.m.emitErrors.Inc()
				return done.err
			}
		case <-ctx.Done():
			// Written but not yet known durable: the caller's request is gone anyway.
			return fmt.Errorf("audit: waiting for fsync: %w", ctx.Err())
		}
	}
	l.m.emitSeconds.Observe(time.Since(start).Seconds())
	return nil
}

// appendLocked seals e as the next event of the chain and writes it.
func (l *FileLog) appendLocked(e *Event) error {
	if l.werr != nil {
		return l.werr
	}
	if e.Time.IsZero() {
		e.Time = l.cfg.Now()
	}
	e.Time = e.Time.UTC()
	e.Schema, e.Seq, e.Prev, e.ID, e.Replica = Schema, l.seq+1, l.prev, newID(e.Time), l.cfg.Replica
	if isDecision(e.Type) {
		e.Decision = decisionFor(e)
	} else {
		e.Decision = nil
	}
	line, err := e.seal()
	if err != nil {
		return err
	}
	n := int64(len(line))
	if l.bytes+n > l.cfg.SpoolMaxBytes {
		if !l.full {
			l.full = true
			l.readyLocked()
			l.m.spoolFull.Set(1)
			l.log.Error("audit: spool full: refusing events (and requests) until the archive catches up",
				"spool_bytes", l.bytes, "spool_max_bytes", l.cfg.SpoolMaxBytes)
		}
		return ErrSpoolFull
	}
	cur := &l.segs[len(l.segs)-1]
	if cur.size > 0 && cur.size+n > l.cfg.MaxFileBytes {
		if err := l.rollover(); err != nil {
			l.werr = err // the current file is closed: no later event can be written
			l.readyLocked()
			return err
		}
		cur = &l.segs[len(l.segs)-1]
	}
	if _, err := l.f.Write(line); err != nil {
		// A short write leaves a partial line that the next open removes; the chain stays
		// at the previous event, so a retry continues it correctly.
		return fmt.Errorf("audit: write: %w", err)
	}
	if cur.first == 0 {
		cur.first = e.Seq
	}
	cur.last, cur.lastHash, cur.size = e.Seq, e.Hash, cur.size+n
	l.bytes += n
	l.seq, l.prev, l.dirty = e.Seq, e.Hash, true
	if !l.alarmed && l.bytes > l.cfg.SpoolMaxBytes/5*4 {
		l.alarmed = true
		l.m.spoolAlarm.Set(1)
		l.log.Warn("audit: spool above 80% of its bound: events are not reaching the archive fast enough",
			"spool_bytes", l.bytes, "spool_max_bytes", l.cfg.SpoolMaxBytes)
	}
	l.m.spoolBytes.Set(float64(l.bytes))
	l.m.spoolEvents.Set(float64(l.depthLocked()))
	for _, w := range l.wake {
		select {
		case w <- struct{}{}:
		default:
		}
	}
	return nil
}

func (l *FileLog) depthLocked() uint64 {
	if l.seq < l.floor.Seq {
		return 0
	}
	return l.seq - l.floor.Seq
}

func (l *FileLog) rollover() error {
	if err := errors.Join(l.f.Sync(), l.f.Close()); err != nil {
		return fmt.Errorf("audit: rollover: %w", err)
	}
	return l.openIndex(l.segs[len(l.segs)-1].index+1, false)
}

// Ready reports whether Emit can accept events: ErrSpoolFull while the spool is full,
// ErrClosed after Close. The proxy refuses requests while it is not nil.
//
// It takes no lock (every request on both listeners asks): it reads what readyLocked
// published when the state last changed.
func (l *FileLog) Ready() error {
	if err := l.ready.Load(); err != nil {
		return *err
	}
	return nil
}

// readyLocked publishes, for Ready, whether Emit can take events now. l.mu is held; every
// change to l.f, l.werr or l.full is followed by a call.
func (l *FileLog) readyLocked() {
	var err error
	switch {
	case l.f == nil:
		err = ErrClosed
	case l.werr != nil:
		err = l.werr
	case l.full:
		err = ErrSpoolFull
	}
	if err == nil {
		l.ready.Store(nil)
	} else {
		l.ready.Store(&err)
	}
}

// Sync flushes written events to stable storage and releases Emits waiting for it.
func (l *FileLog) Sync() error {
	l.mu.Lock()
	f, dirty, done := l.f, l.dirty, l.syncDone
	l.dirty = false
	l.syncDone = newSyncWait()
	l.mu.Unlock()
	if f == nil || !dirty {
		done.release(nil)
		return nil
	}
	// Outside the lock, so Emit never waits for a disk flush it did not ask for. A
	// rollover may close f meanwhile; it synced f first, and records its failure in werr.
	err := l.fsync(f)
	if errors.Is(err, os.ErrClosed) {
		l.mu.Lock()
		err = l.werr
		l.mu.Unlock()
	}
	if err != nil {
		err = fmt.Errorf("audit: sync: %w", err)
		l.mu.Lock()
		l.dirty = true
		l.mu.Unlock()
	}
	done.release(err)
	return err
}

// syncWait lets Durable Emits wait for the fsync that covers their events, and learn
// whether it failed.
type syncWait struct {
	ch  chan struct{}
	err error // set before ch is closed
}

func newSyncWait() *syncWait { return &syncWait{ch: make(chan struct{})} }

func (w *syncWait) release(err error) {
	w.err = err
	close(w.ch)
}

// Run syncs every interval (at once when a Durable Emit waits), writes time-based
// checkpoints, ships events to the sinks and trims the spool, until ctx ends; then it syncs,
// writes a last checkpoint and closes the log. Sinks get a last chance to catch up with
// what is in the spool (bounded by a few seconds): whatever they miss stays in the spool.
func (l *FileLog) Run(ctx context.Context, interval time.Duration) error {
	// The shippers stop after the last checkpoint is written, so the sinks get it too.
	shipCtx, stopShipping := context.WithCancel(context.WithoutCancel(ctx))
	defer stopShipping()
	var g errgroup.Group
	for _, s := range l.cfg.Sinks {
		sh := l.newShipper(s)
		g.Go(func() error { sh.run(shipCtx); return nil })
	}
	t := time.NewTicker(interval)
	defer t.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-t.C:
			l.timedCheckpoint()
		case <-l.syncReq:
		}
		if err := l.Sync(); err != nil {
			l.log.Error("audit: sync failed", "err", err)
		}
	}
	l.lastCheckpoint()
	stopShipping()
	_ = g.Wait()
	return l.Close()
}

// lastCheckpoint signs the head at shutdown, if events came since the last checkpoint.
func (l *FileLog) lastCheckpoint() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.checkpointIfNewLocked()
}

func (l *FileLog) checkpointIfNewLocked() {
	if l.f != nil && l.cfg.Signer != nil && l.seq > l.cpSeq {
		if err := l.checkpointLocked(); err != nil {
			l.log.Error("audit: checkpoint failed", "err", err)
		}
	}
}

func (l *FileLog) timedCheckpoint() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil && l.cfg.Signer != nil && l.seq > l.cpSeq && l.cfg.Now().Sub(l.cpTime) >= l.cfg.CheckpointInterval {
		if err := l.checkpointLocked(); err != nil {
			l.log.Error("audit: checkpoint failed", "err", err)
		}
	}
}

// Close writes a last checkpoint, syncs and closes the current file. Later Emits fail.
func (l *FileLog) Close() error {
	l.trimMu.Lock() // a trim under way finishes first; none starts after (trim checks l.f)
	defer l.trimMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	l.checkpointIfNewLocked()
	err := errors.Join(l.f.Sync(), l.f.Close())
	l.f = nil
	l.readyLocked()
	if err != nil {
		err = fmt.Errorf("audit: close: %w", err)
	}
	l.syncDone.release(err)
	l.syncDone = newSyncWait()
	return err
}

// Query reads the events of the archive (FileConfig.ArchiveDir) and the spool that q selects,
// in order, until fn returns false; see Reader.
func (l *FileLog) Query(q Query, fn func(Event) bool) error {
	return Reader{SpoolDir: l.cfg.Dir, ArchiveDir: l.cfg.ArchiveDir}.Query(q, fn)
}

// Head returns the seq and hash of the newest event.
func (l *FileLog) Head() (uint64, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seq, l.prev
}

// trimFor records what sh's archive holds and trims the spool to what every sink's holds.
func (l *FileLog) trimFor(sh *shipper, archived uint64) error {
	l.mu.Lock()
	if l.archived == nil {
		l.archived = map[*shipper]uint64{}
	}
	l.archived[sh] = max(l.archived[sh], archived)
	acked := archived
	n := 0
	for _, a := range l.archived {
		acked = min(acked, a)
		n++
	}
	all := n == len(l.wake)
	l.mu.Unlock()
	if !all {
		return nil
	}
	return l.trim(acked)
}

// trim deletes the segments whose every event is at or below acked, never the one being
// written, recording the last deleted event in spool.floor first so the chain and Verify
// continue after it. The file work (fsyncs, removals) runs without holding up Emit.
func (l *FileLog) trim(acked uint64) error {
	l.trimMu.Lock()
	defer l.trimMu.Unlock()
	for {
		l.mu.Lock()
		if l.f == nil { // closed: the directory may belong to a log opened since
			l.mu.Unlock()
			return nil
		}
		if len(l.segs) < 2 || l.segs[0].first != 0 && l.segs[0].last > acked {
			l.trimmedLocked()
			l.mu.Unlock()
			return nil
		}
		s := l.segs[0]
		l.mu.Unlock()

		floor := floorMark{Seq: s.last, Hash: s.lastHash}
		if s.first != 0 {
			if err := writeFileAtomic(filepath.Join(l.cfg.Dir, "spool.floor"), mustJSON(floor)); err != nil {
				return err
			}
		}
		if err := os.Remove(l.segPath(s.index)); err != nil {
			return fmt.Errorf("audit: trim: %w", err)
		}
		l.mu.Lock()
		if s.first != 0 {
			l.floor = floor
		}
		l.segs = l.segs[1:]
		l.bytes -= s.size
		l.mu.Unlock()
	}
}

// trimmedLocked updates the spool's state and metrics after a trim. l.mu is held.
func (l *FileLog) trimmedLocked() {
	if l.full && l.bytes < l.cfg.SpoolMaxBytes/10*9 {
		l.full = false
		l.readyLocked()
		l.m.spoolFull.Set(0)
		l.log.Info("audit: spool has room again: accepting events", "spool_bytes", l.bytes)
	}
	if l.alarmed && l.bytes < l.cfg.SpoolMaxBytes/5*4 {
		l.alarmed = false
		l.m.spoolAlarm.Set(0)
	}
	l.m.spoolBytes.Set(float64(l.bytes))
	l.m.spoolEvents.Set(float64(l.depthLocked()))
}

// lastEvent decodes the last event of a segment.
func lastEvent(path string) (Event, error) {
	var e Event
	data, err := os.ReadFile(path)
	if err != nil {
		return e, fmt.Errorf("audit: %w", err)
	}
	data = bytes.TrimSuffix(data, []byte("\n"))
	if err := json.Unmarshal(data[bytes.LastIndexByte(data, '\n')+1:], &e); err != nil {
		return e, fmt.Errorf("audit: %s: last event unreadable: %w", path, err)
	}
	return e, nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only fixed types are encoded here
	}
	return b
}

// writeFileAtomic writes path through a synced temporary file and a rename, then syncs the
// directory, so a crash leaves the old or the new content, never a mix.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		return fmt.Errorf("audit: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("audit: sync %s: %w", dir, err)
	}
	return nil
}

func eventFiles(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "events-*.jsonl"))
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	slices.Sort(files)
	return files, nil
}

// snapshot is what a reader may read: up to seq, and in the last segment up to size bytes.
type snapshot struct {
	seq   uint64
	floor uint64
	segs  []segment
}

func (l *FileLog) snapshot() snapshot {
	l.mu.Lock()
	defer l.mu.Unlock()
	return snapshot{seq: l.seq, floor: l.floor.Seq, segs: slices.Clone(l.segs)}
}

// readPos is where a reader stopped: the event with seq next starts at byte off of segment
// index. It saves a shipper from scanning a segment from its start for every batch.
type readPos struct {
	index int
	off   int64
	next  uint64
}

// readRange reads up to max events from seq from on (from > floor), at most maxBytes of
// lines, from the spool files as of snap. With pos (nil: none) it starts where the last
// read stopped when that is from, and records where this one stops.
func (l *FileLog) readRange(snap snapshot, from uint64, max int, maxBytes int, pos *readPos) ([]Record, error) {
	if from > snap.seq {
		return nil, nil
	}
	var out []Record
	size := 0
	for _, s := range snap.segs {
		if s.first == 0 || s.last < from {
			continue
		}
		start := int64(0)
		if pos != nil && pos.next == from+uint64(len(out)) && pos.index == s.index && pos.off <= s.size {
			start = pos.off
		}
		f, err := os.Open(l.segPath(s.index))
		if err != nil {
			return out, fmt.Errorf("audit: read spool: %w", err)
		}
		r := bufio.NewReaderSize(io.NewSectionReader(f, start, s.size-start), 256<<10)
		off := start
		for {
			line, err := r.ReadSlice('\n')
			if len(line) > 0 && line[len(line)-1] == '\n' {
				off += int64(len(line))
				seq, ok := lineSeq(line)
				if !ok {
					f.Close()
					return out, fmt.Errorf("audit: spool %s: unreadable event", filepath.Base(f.Name()))
				}
				if seq >= from {
					if seq != from+uint64(len(out)) {
						f.Close()
						return out, fmt.Errorf("audit: spool %s: seq %d out of order", filepath.Base(f.Name()), seq)
					}
					out = append(out, Record{Seq: seq, Line: bytes.Clone(line[:len(line)-1])})
					size += len(line)
					if len(out) >= max || size >= maxBytes {
						f.Close()
						if pos != nil {
							*pos = readPos{index: s.index, off: off, next: seq + 1}
						}
						return out, nil
					}
				}
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				f.Close()
				return out, fmt.Errorf("audit: spool %s: event longer than 256 KiB", filepath.Base(f.Name()))
			}
			if err != nil {
				break
			}
		}
		f.Close()
		if pos != nil && len(out) > 0 {
			*pos = readPos{index: s.index, off: off, next: from + uint64(len(out))}
		}
	}
	return out, nil
}
