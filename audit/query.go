package audit

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/redis/go-redis/v9"
)

// Query selects events; empty fields match everything.
type Query struct {
	Tenant  string
	Gateway string
	Type    string
	Since   time.Time // inclusive
	Until   time.Time // exclusive
}

// Match reports whether e is selected.
func (q Query) Match(e *Event) bool {
	return (q.Tenant == "" || e.Tenant == q.Tenant) && (q.Gateway == "" || e.Gateway == q.Gateway) &&
		(q.Type == "" || e.Type == q.Type) && (q.Since.IsZero() || !e.Time.Before(q.Since)) &&
		(q.Until.IsZero() || e.Time.Before(q.Until))
}

// Reader reads events for operators and the admin API: the archive first, then every
// replica's Redis stream, then the spool (the streams and the spool may still hold events
// already archived: each replica's seq is read once).
type Reader struct {
	// SpoolDir is the spool's directory ("" none).
	SpoolDir string
	// ArchiveDir is the archive's directory ("" none).
	ArchiveDir string
	// Redis holds the replicas' streams (nil none): what every replica wrote and the archive
	// does not hold yet.
	Redis redis.UniversalClient
}

// Query calls fn with every selected event in order (per replica, by seq) until fn returns
// false.
func (r Reader) Query(q Query, fn func(Event) bool) error {
	return r.QueryContext(context.Background(), q, fn)
}

// QueryContext is Query; ctx bounds the reads of Redis.
func (r Reader) QueryContext(ctx context.Context, q Query, fn func(Event) bool) error {
	seen := map[string]uint64{} // per replica: the highest seq given
	emit := func(e Event) bool {
		if e.Seq <= seen[e.Replica] {
			return true
		}
		seen[e.Replica] = e.Seq
		if !q.Match(&e) {
			return true
		}
		return fn(e)
	}
	more := true
	if r.ArchiveDir != "" {
		var err error
		if more, err = queryArchive(r.ArchiveDir, q, emit); err != nil {
			return err
		}
	}
	if more && r.Redis != nil {
		var err error
		if more, err = queryStreams(ctx, r.Redis, emit); err != nil {
			return err
		}
	}
	if more && r.SpoolDir != "" {
		files, err := eventFiles(r.SpoolDir)
		if err != nil {
			return err
		}
		for _, p := range files {
			f, err := os.Open(p)
			if errors.Is(err, os.ErrNotExist) {
				continue // trimmed meanwhile: its events are in the archive
			}
			if err != nil {
				return fmt.Errorf("audit: %w", err)
			}
			more, err = scanLines(f, completeLines, emit)
			f.Close()
			if err != nil || !more {
				return err
			}
		}
	}
	return nil
}

func queryArchive(dir string, q Query, fn func(Event) bool) (bool, error) {
	reps, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return true, nil
		}
		return false, fmt.Errorf("audit: %w", err)
	}
	for _, r := range reps {
		if !r.IsDir() {
			continue
		}
		rdir := filepath.Join(dir, r.Name())
		ms, err := readManifests(rdir)
		if err != nil {
			return false, err
		}
		for _, m := range ms {
			if m.Deleted != nil || !q.Until.IsZero() && !m.FirstTime.Before(q.Until) || !q.Since.IsZero() && m.LastTime.Before(q.Since) {
				continue
			}
			f, err := os.Open(filepath.Join(rdir, m.Segment()))
			if err != nil {
				return false, fmt.Errorf("audit: %w", err)
			}
			zr, err := gzip.NewReader(f)
			if err != nil {
				f.Close()
				return false, fmt.Errorf("audit: %s: %w", m.Segment(), err)
			}
			more, err := scanLines(zr, bufio.ScanLines, fn)
			f.Close()
			if err != nil || !more {
				return more, err
			}
		}
	}
	return true, nil
}

// completeLines splits newline-terminated lines only: the spool's last line may be half
// written by a live Emit, and is read once it is whole.
func completeLines(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF {
		return len(data), nil, nil
	}
	return 0, nil, nil
}

func scanLines(r io.Reader, split bufio.SplitFunc, fn func(Event) bool) (bool, error) {
	sc := bufio.NewScanner(r)
	sc.Split(split)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return false, fmt.Errorf("audit: unreadable event: %w", err)
		}
		if !fn(e) {
			return false, nil
		}
	}
	if err := sc.Err(); errors.Is(err, bufio.ErrTooLong) {
		return false, fmt.Errorf("audit: unreadable event: longer than %d MiB", maxLine>>20)
	} else if err != nil {
		return false, err
	}
	return true, nil
}
