package policies

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing/fstest"

	"github.com/moltgate/moltgate/store"
)

// Promotion: `moltgate policy promote` makes the candidate set (Config.ShadowDir) live, and
// `policy rollback` re-activates the set that was live before. What is promoted is a
// snapshot of the candidate's files, taken at promote time and checked to be the revision
// that was shadowed; it is kept in the store with the sets it replaced, so every replica on
// a shared store loads it from the change stream. A promoted revision overrides Config.Dir
// (and the embedded set) until it is rolled back to that configured set.

// RevisionsBucket and RevisionsKey name the store record of promoted revisions.
const (
	RevisionsBucket = "policy.revisions"
	RevisionsKey    = "active"
)

// maxHistory is how many earlier sets a rollback can return to.
const maxHistory = 10

// maxSnapshotBytes bounds a promoted set's files: the record travels to every replica.
const maxSnapshotBytes = 4 << 20

// Errors of Promote and Rollback.
var (
	ErrNoCandidate      = errors.New("no candidate policy set (policies.shadow.dir)")
	ErrRevisionMismatch = errors.New("revision mismatch")
	ErrNoRollback       = errors.New("no earlier revision to roll back to")
)

// Snapshot is a policy set's files as promoted: what goes live is these bytes, not what a
// directory holds later. Paths are slash-separated and relative to the set's root.
type Snapshot struct {
	Revision string            `json:"revision"`
	Files    map[string][]byte `json:"files"`
}

// FS returns the snapshot as a file system.
func (s *Snapshot) FS() fs.FS {
	m := make(fstest.MapFS, len(s.Files))
	for p, b := range s.Files {
		m[p] = &fstest.MapFile{Data: b, Mode: 0o444}
	}
	return m
}

// SnapshotDir reads the files of the policy set in dir that the engine and its gate read
// (modules, tests, data files; not testdata, schemas or dot directories).
func SnapshotDir(dir string) (*Snapshot, error) {
	s := &Snapshot{Files: map[string][]byte{}}
	total := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != dir && (name == "testdata" || name == "schemas" || strings.HasPrefix(name, ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		switch path.Ext(name) {
		case ".rego", ".json", ".yaml", ".yml":
		default:
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if total += len(b); total > maxSnapshotBytes {
			return fmt.Errorf("more than %d bytes of policy files", maxSnapshotBytes)
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		s.Files[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("policies: snapshot %s: %w", dir, err)
	}
	return s, nil
}

// dirFS is a policy directory as a file system, once it is known to be one.
func dirFS(dir string) (fs.FS, error) {
	if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("policies: load %s: %w", dir, err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("policies: load %s: not a directory", dir)
	}
	return os.DirFS(dir), nil
}

// Promoted returns the revision of the promoted set that is live, "" when the configured
// set (Config.Dir or the embedded one) is.
func (e *Engine) Promoted() string {
	if s := e.promoted.Load(); s != nil {
		return s.Revision
	}
	return ""
}

// activate makes snapshot live (nil: the configured set), gated as a reload is. On error
// the live set stays.
func (e *Engine) activate(ctx context.Context, s *Snapshot) error {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	old := e.promoted.Swap(s)
	err := e.reload(ctx, nil)
	if err == nil && s != nil && e.Revision() != s.Revision {
		err = fmt.Errorf("policies: %w: promoted %s loads as %s", ErrRevisionMismatch, s.Revision, e.Revision())
	}
	if err != nil {
		e.promoted.Store(old)
		if rerr := e.reload(ctx, nil); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}
	return e.counted(err)
}

// RevisionKV is the store promoted revisions are kept in (store.Bolt, store.Redis).
type RevisionKV interface {
	Get(bucket, key string) ([]byte, error)
	Swap(bucket, key string, old, new []byte) error
}

// revisionRecord is the store record: the promoted set that is live, and the sets that
// were live before it, oldest first (null: the configured set).
type revisionRecord struct {
	Active  *Snapshot   `json:"active"`
	History []*Snapshot `json:"history"`
}

// RevisionState is what Promote, Rollback and State report.
type RevisionState struct {
	Live      string `json:"live"`                // the revision that decides here
	Promoted  bool   `json:"promoted"`            // Live is a promoted revision (else the configured set)
	Previous  string `json:"previous,omitempty"`  // what rollback would re-activate ("configured": the configured set)
	Candidate string `json:"candidate,omitempty"` // the candidate being shadowed
}

// Revisions keeps promoted policy revisions in a store and the engine's live set in step
// with them.
type Revisions struct {
	e  *Engine
	kv RevisionKV
}

// NewRevisions returns the promotions of e kept in kv.
func NewRevisions(e *Engine, kv RevisionKV) *Revisions { return &Revisions{e: e, kv: kv} }

func (r *Revisions) read() (revisionRecord, []byte, error) {
	var rec revisionRecord
	raw, err := r.kv.Get(RevisionsBucket, RevisionsKey)
	if errors.Is(err, store.ErrNotFound) {
		return rec, nil, nil
	}
	if err != nil {
		return rec, nil, fmt.Errorf("policies: revisions: %w", err)
	}
	if err := json.Unmarshal(raw, &rec); err != nil {
		return rec, nil, fmt.Errorf("policies: revisions: %w", err)
	}
	return rec, raw, nil
}

// Load makes the store's promoted revision live, or the configured set when none is
// promoted: at start, on a change of the record, and when a replica reads everything again.
// It reports whether the live set changed.
func (r *Revisions) Load(ctx context.Context) (bool, error) {
	rec, _, err := r.read()
	if err != nil {
		return false, err
	}
	if rec.Active.revision() == r.e.Promoted() {
		return false, nil
	}
	if err := r.e.activate(ctx, rec.Active); err != nil {
		return false, err
	}
	r.e.logger.LogAttrs(ctx, slog.LevelInfo, "policies: promoted revision loaded", slog.String("revision", r.e.Revision()),
		slog.Bool("promoted", rec.Active != nil))
	return true, nil
}

// State reports the live, previous and candidate revisions.
func (r *Revisions) State() (RevisionState, error) {
	rec, _, err := r.read()
	if err != nil {
		return RevisionState{}, err
	}
	st := RevisionState{Live: r.e.Revision(), Promoted: r.e.Promoted() != "", Candidate: r.e.ShadowRevision()}
	if n := len(rec.History); n > 0 {
		st.Previous = cmp.Or(rec.History[n-1].revision(), "configured")
	}
	return st, nil
}

// Promote snapshots the candidate directory and makes it live here and in the store. The
// snapshot must be the revision being shadowed (the directory has not changed since it was
// loaded), and expect, when not empty, too. The set passes the gate before anything is
// written.
func (r *Revisions) Promote(ctx context.Context, expect string) (RevisionState, error) {
	dir := r.e.ShadowDir()
	if dir == "" {
		return RevisionState{}, fmt.Errorf("policies: promote: %w", ErrNoCandidate)
	}
	snap, err := SnapshotDir(dir)
	if err != nil {
		return RevisionState{}, err
	}
	src, err := loadSource(ctx, snap.FS(), dir)
	if err != nil {
		return RevisionState{}, fmt.Errorf("policies: promote: %w", err)
	}
	snap.Revision = src.revision
	if shadowed := r.e.ShadowRevision(); snap.Revision != shadowed {
		return RevisionState{}, fmt.Errorf("policies: promote: %w: %s holds revision %s, the candidate shadowed is %s: "+
			"reload it (SIGHUP) and check its differences first", ErrRevisionMismatch, dir, snap.Revision, shadowed)
	}
	if expect != "" && expect != snap.Revision {
		return RevisionState{}, fmt.Errorf("policies: promote: %w: asked for %s, the candidate is %s", ErrRevisionMismatch, expect, snap.Revision)
	}
	return r.change(ctx, func(rec *revisionRecord) (*Snapshot, error) {
		rec.History = append(rec.History, rec.Active)
		if len(rec.History) > maxHistory {
			rec.History = rec.History[len(rec.History)-maxHistory:]
		}
		rec.Active = snap
		return snap, nil
	})
}

// Rollback re-activates the set that was live before the current promoted one (the
// configured set, at the bottom).
func (r *Revisions) Rollback(ctx context.Context) (RevisionState, error) {
	return r.change(ctx, func(rec *revisionRecord) (*Snapshot, error) {
		n := len(rec.History)
		if n == 0 {
			return nil, fmt.Errorf("policies: rollback: %w", ErrNoRollback)
		}
		rec.Active, rec.History = rec.History[n-1], rec.History[:n-1]
		return rec.Active, nil
	})
}

// change edits the record with edit, makes the set it returns live here (refusing the
// change if it does not load), then writes the record if no one else changed it meanwhile.
func (r *Revisions) change(ctx context.Context, edit func(*revisionRecord) (*Snapshot, error)) (RevisionState, error) {
	rec, old, err := r.read()
	if err != nil {
		return RevisionState{}, err
	}
	prev := r.e.promoted.Load()
	next, err := edit(&rec)
	if err != nil {
		return RevisionState{}, err
	}
	raw, err := json.Marshal(rec)
	if err != nil {
		return RevisionState{}, fmt.Errorf("policies: revisions: %w", err)
	}
	if err := r.e.activate(ctx, next); err != nil {
		return RevisionState{}, err
	}
	if err := r.kv.Swap(RevisionsBucket, RevisionsKey, old, raw); err != nil {
		// Not recorded: this replica goes back to what the store says is live.
		if aerr := r.e.activate(ctx, prev); aerr != nil {
			err = errors.Join(err, aerr)
		}
		return RevisionState{}, fmt.Errorf("policies: revisions: %w", err)
	}
	return r.State()
}

func (s *Snapshot) revision() string {
	if s == nil {
		return ""
	}
	return s.Revision
}

// gateFallback gates cand while a promoted revision decides. cand is then not what decides,
// but it becomes the set in force that a rollback returns to, so it must pass the gate now:
// a set is never in force without having passed it. Without a promoted revision, load gates
// cand itself.
func (e *Engine) gateFallback(ctx context.Context, cand *candidate) error {
	if e.promoted.Load() == nil {
		return nil
	}
	if _, err := loadSource(ctx, cand.fsys, cand.name); err != nil {
		return fmt.Errorf("%w (a promoted revision decides; the bundle in force stays its fallback)", err)
	}
	return nil
}
