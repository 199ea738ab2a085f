package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// FileLog appends events to JSON-lines files in a directory, one chain across all files.
// Files are named events-NNNNNN.jsonl and rolled over at MaxFileBytes. It is safe for
// concurrent use.
type FileLog struct {
	dir      string
	maxBytes int64
	now      func() time.Time
	log      *slog.Logger

	mu    sync.Mutex
	f     *os.File
	index int
	size  int64
	seq   uint64
	prev  string
	dirty bool
}

// FileConfig configures a FileLog.
type FileConfig struct {
	// Dir holds the event files; created with mode 0700.
	Dir string
	// MaxFileBytes rolls over to a new file past this size. Default 64 MiB.
	MaxFileBytes int64
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// OpenFile opens the event files in cfg.Dir and continues their chain. A last line cut short
// by a crash (never acknowledged: Emit had not returned) is removed and logged.
func OpenFile(cfg FileConfig, logger *slog.Logger) (*FileLog, error) {
	if cfg.MaxFileBytes <= 0 {
		cfg.MaxFileBytes = 64 << 20
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	l := &FileLog{dir: cfg.Dir, maxBytes: cfg.MaxFileBytes, now: cfg.Now, log: logger, prev: genesis, index: 1}
	files, err := eventFiles(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if len(files) > 0 {
		last := files[len(files)-1]
		if _, err := fmt.Sscanf(filepath.Base(last), "events-%06d.jsonl", &l.index); err != nil {
			return nil, fmt.Errorf("audit: %s: unexpected name", last)
		}
		if err := l.recoverTail(last); err != nil {
			return nil, err
		}
	}
	if err := l.openIndex(l.index); err != nil {
		return nil, err
	}
	return l, nil
}

// recoverTail reads the last complete event of path to continue the chain.
func (l *FileLog) recoverTail(path string) error {
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
		data = data[:cut]
	}
	lines := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	if last := lines[len(lines)-1]; len(last) > 0 {
		var e Event
		if err := json.Unmarshal(last, &e); err != nil {
			return fmt.Errorf("audit: %s: last event unreadable: %w", path, err)
		}
		l.seq, l.prev = e.Seq, e.Hash
	}
	return nil
}

func (l *FileLog) openIndex(i int) error {
	path := filepath.Join(l.dir, fmt.Sprintf("events-%06d.jsonl", i))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("audit: %w", err)
	}
	l.f, l.index, l.size = f, i, fi.Size()
	return nil
}

// Emit appends e to the chain. The event is in the file (not yet fsynced; Sync does that in
// batches) when Emit returns nil.
func (l *FileLog) Emit(_ context.Context, e Event) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("audit: log is closed")
	}
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	e.Time = e.Time.UTC()
	e.Schema, e.Seq, e.Prev, e.ID = Schema, l.seq+1, l.prev, newID(e.Time)
	line, err := e.seal()
	if err != nil {
		return err
	}
	if l.size > 0 && l.size+int64(len(line)) > l.maxBytes {
		if err := l.rollover(); err != nil {
			return err
		}
	}
	if _, err := l.f.Write(line); err != nil {
		return fmt.Errorf("audit: write: %w", err)
	}
	l.size += int64(len(line))
	l.seq, l.prev, l.dirty = e.Seq, e.Hash, true
	return nil
}

func (l *FileLog) rollover() error {
	if err := errors.Join(l.f.Sync(), l.f.Close()); err != nil {
		return fmt.Errorf("audit: rollover: %w", err)
	}
	return l.openIndex(l.index + 1)
}

// Sync flushes written events to stable storage.
func (l *FileLog) Sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil || !l.dirty {
		return nil
	}
	l.dirty = false
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("audit: sync: %w", err)
	}
	return nil
}

// Run syncs every interval until ctx ends, then syncs and closes the log.
func (l *FileLog) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return l.Close()
		case <-t.C:
			if err := l.Sync(); err != nil {
				l.log.Error("audit: sync failed", "err", err)
			}
		}
	}
}

// Close syncs and closes the current file. Later Emits fail.
func (l *FileLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := errors.Join(l.f.Sync(), l.f.Close())
	l.f = nil
	return err
}

func eventFiles(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "events-*.jsonl"))
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	slices.Sort(files)
	return files, nil
}

// VerifyError names the first event that breaks the chain.
type VerifyError struct {
	File string
	Line int
	Seq  uint64
	Why  string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("audit: chain broken at %s line %d (seq %d): %s", e.File, e.Line, e.Seq, e.Why)
}

// VerifyDir checks the chain across every event file in dir and returns the number of events,
// or a *VerifyError naming the first bad event.
func VerifyDir(dir string) (int, error) {
	files, err := eventFiles(dir)
	if err != nil {
		return 0, err
	}
	prev, seq, n := genesis, uint64(0), 0
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			return n, fmt.Errorf("audit: %w", err)
		}
		n, prev, seq, err = verifyStream(f, filepath.Base(path), n, prev, seq)
		f.Close()
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func verifyStream(r io.Reader, name string, n int, prev string, seq uint64) (int, string, uint64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for line := 1; sc.Scan(); line++ {
		bad := func(why string) error { return &VerifyError{File: name, Line: line, Seq: seq + 1, Why: why} }
		var e Event
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return n, prev, seq, bad("not an event: " + err.Error())
		}
		if e.Seq != seq+1 {
			return n, prev, seq, bad(fmt.Sprintf("sequence %d, want %d (event missing, inserted or reordered)", e.Seq, seq+1))
		}
		if e.Prev != prev {
			return n, prev, seq, bad("prev does not match the previous event's hash")
		}
		want := e.Hash
		if _, err := e.seal(); err != nil || e.Hash != want {
			return n, prev, seq, bad("hash does not match the event (edited)")
		}
		prev, seq, n = e.Hash, e.Seq, n+1
	}
	if err := sc.Err(); err != nil {
		return n, prev, seq, fmt.Errorf("audit: read %s: %w", name, err)
	}
	return n, prev, seq, nil
}
