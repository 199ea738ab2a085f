package audit

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultRetention is how long archived events are kept unless configured: seven years
// (SOC 2, ISO 27001), counted generously so no leap day cuts it short.
const DefaultRetention = (7*365 + 2) * 24 * time.Hour

// MinRetention is the shortest retention OpenArchive accepts: a configuration below it is
// an error, not a quieter archive.
const MinRetention = 365 * 24 * time.Hour

// ArchiveConfig configures an Archive. The zero value of each field is its documented default.
type ArchiveConfig struct {
	// Dir holds one directory per replica of segments and their manifests.
	Dir string
	// Retention keeps a segment this long after its newest event. Default DefaultRetention;
	// below MinRetention is refused.
	Retention time.Duration
	// Metrics registers the archive metrics. Default: not registered.
	Metrics prometheus.Registerer
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Manifest describes one archive segment. A segment deleted after its retention keeps its
// manifest (with Deleted set), so the chain still verifies across the gap it leaves.
type Manifest struct {
	Replica     string     `json:"replica"`
	FirstSeq    uint64     `json:"first_seq"`
	LastSeq     uint64     `json:"last_seq"`
	Count       int        `json:"count"`
	PrevHash    string     `json:"prev_hash"` // the hash before the first event
	FirstHash   string     `json:"first_hash"`
	LastHash    string     `json:"last_hash"`
	FirstTime   time.Time  `json:"first_time"`
	LastTime    time.Time  `json:"last_time"`
	SHA256      string     `json:"sha256"` // of the .jsonl.gz file, also in its name
	Bytes       int64      `json:"bytes"`
	Created     time.Time  `json:"created"`
	RetainUntil time.Time  `json:"retain_until"`
	Deleted     *time.Time `json:"deleted,omitempty"`
}

// Segment is the file name of the segment a manifest describes.
func (m *Manifest) Segment() string {
	return fmt.Sprintf("%020d-%020d-%s.jsonl.gz", m.FirstSeq, m.LastSeq, m.SHA256)
}

// fileName is the manifest's own file name, beside its segment.
func (m *Manifest) fileName() string {
	return strings.TrimSuffix(m.Segment(), ".jsonl.gz") + ".manifest.json"
}

// Archive is the long-term store: per replica, gzip segments of the chain, content-addressed
// (the SHA-256 of the file is in its name) with a manifest each. It holds each event once:
// Append skips events it has, and refuses events that do not continue the chain. It is safe
// for concurrent use within one process; one process writes a given archive directory.
type Archive struct {
	cfg ArchiveConfig
	log *slog.Logger
	m   *archiveMetrics

	mu    sync.Mutex
	heads map[string]floorMark // per replica: the last archived event
}

// OpenArchive opens (creating) the archive in cfg.Dir. Segments left without a manifest by
// a crash were never acknowledged; they are removed, and their events arrive again.
func OpenArchive(cfg ArchiveConfig, logger *slog.Logger) (*Archive, error) {
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.Retention < MinRetention {
		return nil, fmt.Errorf("audit: archive retention %v is below the minimum %v", cfg.Retention, MinRetention)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m, err := newArchiveMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	a := &Archive{cfg: cfg, log: logger, m: m, heads: map[string]floorMark{}}
	reps, err := os.ReadDir(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	for _, r := range reps {
		if !r.IsDir() {
			continue
		}
		ms, err := a.manifests(r.Name())
		if err != nil {
			return nil, err
		}
		if err := a.removeOrphans(r.Name(), ms); err != nil {
			return nil, err
		}
		if n := len(ms); n > 0 {
			a.heads[r.Name()] = floorMark{Seq: ms[n-1].LastSeq, Hash: ms[n-1].LastHash}
		}
	}
	return a, nil
}

// Dir is the archive's directory.
func (a *Archive) Dir() string { return a.cfg.Dir }

// Head returns the seq and hash of the last event archived for replica.
func (a *Archive) Head(replica string) (uint64, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.heads[replica]
	return h.Seq, h.Hash
}

// manifests reads a replica's manifests, sorted by first seq.
func (a *Archive) manifests(replica string) ([]Manifest, error) {
	return readManifests(filepath.Join(a.cfg.Dir, replica))
}

func readManifests(dir string) ([]Manifest, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.manifest.json"))
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	var out []Manifest
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		var m Manifest
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("audit: %s: %w", p, err)
		}
		if filepath.Base(p) != m.fileName() {
			return nil, fmt.Errorf("audit: %s: name does not match its content", p)
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(x, y Manifest) int { return cmp.Compare(x.FirstSeq, y.FirstSeq) })
	return out, nil
}

func (a *Archive) removeOrphans(replica string, ms []Manifest) error {
	dir := filepath.Join(a.cfg.Dir, replica)
	have := map[string]bool{}
	for _, m := range ms {
		have[m.Segment()] = true
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	for _, e := range entries {
		n := e.Name()
		if strings.HasSuffix(n, ".tmp") || strings.HasSuffix(n, ".jsonl.gz") && !have[n] {
			a.log.Warn("audit: removing an archive file left unacknowledged by a crash", "file", filepath.Join(dir, n))
			if err := os.Remove(filepath.Join(dir, n)); err != nil {
				return fmt.Errorf("audit: %w", err)
			}
		}
	}
	return nil
}

// Append archives recs (consecutive seqs of replica's chain) in one segment, skipping the
// events already archived, after verifying that they continue the archived chain. It
// returns the last seq archived. Records that do not start right after it are not written
// (the result tells the caller where to continue); records that break the chain are
// refused with a *VerifyError naming the first bad one.
func (a *Archive) Append(replica string, recs []Record) (uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.heads[replica]
	i := 0
	for i < len(recs) && recs[i].Seq <= h.Seq {
		i++
	}
	recs = recs[i:]
	if len(recs) == 0 || recs[0].Seq != h.Seq+1 {
		return h.Seq, nil
	}
	c := newChain(VerifyOptions{}, h.Seq, cmp.Or(h.Hash, genesis), true)
	m := Manifest{Replica: replica, FirstSeq: recs[0].Seq, PrevHash: cmp.Or(h.Hash, genesis)}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	for j, r := range recs {
		if j > 0 && r.Seq != recs[j-1].Seq+1 {
			recs = recs[:j] // a gap: archive what continues the chain
			break
		}
		e, err := c.add("incoming "+replica, j+1, r.Line)
		if err != nil {
			a.m.verifyFailures.Inc()
			return h.Seq, err
		}
		if j == 0 {
			m.FirstTime, m.FirstHash = e.Time, e.Hash
		}
		m.LastTime, m.LastHash, m.LastSeq = e.Time, e.Hash, r.Seq
		m.Count++
		zw.Write(r.Line)
		zw.Write([]byte{'\n'})
	}
	if err := zw.Close(); err != nil {
		return h.Seq, fmt.Errorf("audit: archive: %w", err)
	}
	sum := sha256.Sum256(gz.Bytes())
	m.SHA256, m.Bytes = hex.EncodeToString(sum[:]), int64(gz.Len())
	m.Created = a.cfg.Now().UTC()
	m.RetainUntil = m.LastTime.Add(a.cfg.Retention).UTC()
	dir := filepath.Join(a.cfg.Dir, replica)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return h.Seq, fmt.Errorf("audit: %w", err)
	}
	// Segment first, manifest second: a segment without a manifest is an orphan that the next
	// open removes; the manifest is the acknowledgement.
	if err := writeFileAtomic(filepath.Join(dir, m.Segment()), gz.Bytes()); err != nil {
		return h.Seq, err
	}
	if err := writeFileAtomic(filepath.Join(dir, m.fileName()), mustJSON(m)); err != nil {
		return h.Seq, err
	}
	a.heads[replica] = floorMark{Seq: m.LastSeq, Hash: m.LastHash}
	a.m.segments.Inc()
	return m.LastSeq, nil
}

// Expire deletes the segments whose retention has passed, each only after emit recorded
// its deletion as an audit event, and keeps their manifests as tombstones. It returns how
// many it deleted.
func (a *Archive) Expire(ctx context.Context, emit func(context.Context, Event) error) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	reps, err := os.ReadDir(a.cfg.Dir)
	if err != nil {
		return 0, fmt.Errorf("audit: %w", err)
	}
	now := a.cfg.Now().UTC()
	n := 0
	for _, r := range reps {
		if !r.IsDir() {
			continue
		}
		ms, err := a.manifests(r.Name())
		if err != nil {
			return n, err
		}
		for _, m := range ms {
			if m.Deleted != nil || !m.RetainUntil.Before(now) {
				continue
			}
			ev := Event{Type: TypeRetentionDelete, Actor: Actor{Kind: "system", ID: "retention"}, Outcome: "success",
				Reason: "retention_expired", Details: map[string]string{
					"replica": m.Replica, "first_seq": strconv.FormatUint(m.FirstSeq, 10),
					"last_seq": strconv.FormatUint(m.LastSeq, 10), "sha256": m.SHA256,
					"retain_until": m.RetainUntil.Format(time.RFC3339)}}
			if err := emit(ctx, ev); err != nil {
				return n, fmt.Errorf("audit: retention: recording the deletion failed, nothing deleted: %w", err)
			}
			dir := filepath.Join(a.cfg.Dir, r.Name())
			if err := os.Remove(filepath.Join(dir, m.Segment())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return n, fmt.Errorf("audit: retention: %w", err)
			}
			m.Deleted = &now
			if err := writeFileAtomic(filepath.Join(dir, m.fileName()), mustJSON(m)); err != nil {
				return n, err
			}
			a.m.deleted.Inc()
			n++
		}
	}
	return n, nil
}

// RunRetention runs Expire every interval until ctx ends.
func (a *Archive) RunRetention(ctx context.Context, interval time.Duration, emit func(context.Context, Event) error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if n, err := a.Expire(ctx, emit); err != nil {
			a.log.Error("audit: retention failed", "err", err)
		} else if n > 0 {
			a.log.Info("audit: retention deleted archive segments", "segments", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// archiveSink ships the spool straight into an archive (the embedded, single-node mode).
type archiveSink struct {
	a       *Archive
	replica string
	max     int
	every   time.Duration
}

// Sink returns a Sink that archives replica's spool directly, in segments of up to max
// events written at most every interval (unless max are waiting). Defaults 100000, 1 minute.
func (a *Archive) Sink(replica string, max int, every time.Duration) Sink {
	if max <= 0 {
		max = 100000
	}
	if every <= 0 {
		every = time.Minute
	}
	return &archiveSink{a: a, replica: replica, max: max, every: every}
}

func (s *archiveSink) Name() string                { return "archive" }
func (s *archiveSink) Batch() (int, time.Duration) { return s.max, s.every }
func (s *archiveSink) Archived(context.Context) (uint64, error) {
	h, _ := s.a.Head(s.replica)
	return h, nil
}

func (s *archiveSink) Write(_ context.Context, floor uint64, recs []Record) (uint64, error) {
	held, err := s.a.Append(s.replica, recs)
	if err == nil && held < floor {
		return held, fmt.Errorf("audit: archive of %s holds up to seq %d but the spool starts after %d: events are missing from the archive", s.replica, held, floor)
	}
	return held, err
}

// VerifyArchive checks every replica's chain across its segments and manifests in dir: each
// segment's content hash, its events' chain, and that segments follow one another (deleted
// segments are bridged by their manifests). It returns a report per replica.
func VerifyArchive(dir string, opts VerifyOptions) (map[string]Report, error) {
	reps, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	out := map[string]Report{}
	for _, r := range reps {
		if !r.IsDir() {
			continue
		}
		rdir := filepath.Join(dir, r.Name())
		ms, err := readManifests(rdir)
		if err != nil {
			return out, err
		}
		c := newChain(opts, 0, genesis, true)
		for _, m := range ms {
			name := filepath.Join(r.Name(), m.Segment())
			if m.FirstSeq != c.seq+1 || m.PrevHash != c.prev {
				return out, &VerifyError{File: name, Line: 1, Seq: c.seq + 1, Why: "segment does not continue the chain (segment missing or altered)"}
			}
			if m.Deleted != nil {
				// A tombstone vouches for a gap only if the deletion kept to retention: a
				// recent segment cannot be made to disappear by deleting it and marking its
				// manifest.
				if m.Deleted.Before(m.RetainUntil) || m.RetainUntil.Before(m.LastTime.Add(MinRetention)) {
					return out, &VerifyError{File: name, Line: 1, Seq: m.FirstSeq,
						Why: "segment deleted before its retention ended"}
				}
				c.seq, c.prev = m.LastSeq, m.LastHash
				continue
			}
			before := c.rep.Events
			data, err := os.ReadFile(filepath.Join(rdir, m.Segment()))
			if err != nil {
				return out, &VerifyError{File: name, Line: 1, Seq: c.seq + 1, Why: "segment missing: " + err.Error()}
			}
			zr, err := gzip.NewReader(bytes.NewReader(data))
			if err != nil {
				return out, &VerifyError{File: name, Line: 1, Seq: c.seq + 1, Why: "segment unreadable: " + err.Error()}
			}
			if err := c.lines(bufio.NewReader(zr), name); err != nil {
				return out, err
			}
			if _, err := io.Copy(io.Discard, zr); err != nil {
				return out, &VerifyError{File: name, Line: c.rep.Events - before, Seq: c.seq, Why: "segment corrupt: " + err.Error()}
			}
			sum := sha256.Sum256(data)
			switch {
			case c.seq != m.LastSeq || c.prev != m.LastHash || c.rep.Events-before != m.Count:
				return out, &VerifyError{File: name, Line: c.rep.Events - before, Seq: c.seq, Why: "segment holds other events than its manifest says"}
			case hex.EncodeToString(sum[:]) != m.SHA256:
				return out, &VerifyError{File: name, Line: 1, Seq: m.FirstSeq, Why: "segment content does not match its hash"}
			}
		}
		out[r.Name()] = c.rep
	}
	return out, nil
}
