package policies

import (
	"fmt"
	"io/fs"
	"os"
	"testing/fstest"
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

// liveFS is the live set's files: a promoted snapshot overrides Dir, which overrides the
// embedded set.
func (e *Engine) liveFS() (fs.FS, string, error) {
	if s := e.promoted.Load(); s != nil {
		return s.FS(), "promoted revision " + s.Revision, nil
	}
	if e.dir == "" {
		return Default(), "embedded policies", nil
	}
	fsys, err := dirFS(e.dir)
	return fsys, e.dir, err
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
