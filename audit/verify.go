package audit

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// VerifyError names the first event that breaks the chain: where it is (File: a spool file,
// archive segment or stream; Line: its position there, from 1), the seq the chain expected
// there, the id of the event found (when readable) and why.
type VerifyError struct {
	File string
	Line int
	Seq  uint64
	ID   string
	Why  string
}

func (e *VerifyError) Error() string {
	id := ""
	if e.ID != "" {
		id = ", id " + e.ID
	}
	return fmt.Sprintf("audit: chain broken at %s line %d (seq %d%s): %s", e.File, e.Line, e.Seq, id, e.Why)
}

// VerifyOptions tune Verify.
type VerifyOptions struct {
	// PublicKey, when set, must be the key of every checkpoint. Default: each checkpoint is
	// checked against the key it names (which catches a rewrite by anyone who did not also
	// replace the key; a trusted key catches that too).
	PublicKey ed25519.PublicKey
}

// Report is what a verification read.
type Report struct {
	Events      int    // events verified
	First, Last uint64 // seqs of the first and last
	Checkpoints int    // valid checkpoints among them
	Unanchored  int    // events after the last checkpoint (not yet covered by a signature)
}

// chain verifies events one after another.
type chain struct {
	opts     VerifyOptions
	prev     string
	seq      uint64
	anchored bool // prev and seq are known before the first event
	rep      Report
}

func newChain(opts VerifyOptions, seq uint64, prev string, anchored bool) *chain {
	return &chain{opts: opts, seq: seq, prev: prev, anchored: anchored}
}

// add verifies the next event, raw, found at file:line, and returns it decoded.
func (c *chain) add(file string, line int, raw []byte) (*Event, error) {
	bad := func(e *Event, why string) error {
		ve := &VerifyError{File: file, Line: line, Seq: c.seq + 1, Why: why}
		if e != nil {
			ve.ID = e.ID
		}
		return ve
	}
	var e Event
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return nil, bad(nil, "not an event: "+err.Error())
	}
	if !c.anchored {
		// The first event of a trimmed copy (a stream, a spool after trimming): it starts
		// the chain this copy can vouch for.
		c.seq, c.prev, c.anchored = e.Seq-1, e.Prev, true
	}
	if e.Seq != c.seq+1 {
		return nil, bad(&e, fmt.Sprintf("sequence %d, want %d (event missing, inserted or reordered)", e.Seq, c.seq+1))
	}
	if e.Prev != c.prev {
		return nil, bad(&e, "prev does not match the previous event's hash")
	}
	want := e.Hash
	if _, err := e.seal(); err != nil || e.Hash != want {
		return nil, bad(&e, "hash does not match the event (edited)")
	}
	if e.Type == TypeCheckpoint {
		if why := checkCheckpoint(&e, c.opts.PublicKey); why != "" {
			return nil, bad(&e, why)
		}
		c.rep.Checkpoints++
		c.rep.Unanchored = -1
	}
	if c.rep.Events == 0 {
		c.rep.First = e.Seq
	}
	c.prev, c.seq = e.Hash, e.Seq
	c.rep.Events++
	c.rep.Last = e.Seq
	c.rep.Unanchored++
	return &e, nil
}

// maxLine bounds one line of a spool file: far above any event moltgate writes, and what
// a reader holds in memory at once.
const maxLine = 16 << 20

// lines feeds every line of r to c.
func (c *chain) lines(r io.Reader, name string) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	line := 1
	for ; sc.Scan(); line++ {
		if _, err := c.add(name, line, sc.Bytes()); err != nil {
			return err
		}
	}
	switch err := sc.Err(); {
	case errors.Is(err, bufio.ErrTooLong):
		// A line no event could fill breaks the chain where it stands, as any other
		// line that is not an event does.
		return &VerifyError{File: name, Line: line, Seq: c.seq + 1, Why: fmt.Sprintf("not an event: longer than %d MiB", maxLine>>20)}
	case err != nil:
		return fmt.Errorf("audit: read %s: %w", name, err)
	}
	return nil
}

// VerifyDir checks the chain across every spool file in dir and returns the number of
// events, or a *VerifyError naming the first bad event.
func VerifyDir(dir string) (int, error) {
	rep, err := VerifyFiles(dir, VerifyOptions{})
	return rep.Events, err
}

// VerifyFiles checks the chain across the spool files in dir, from the spool's floor (the
// last event trimmed after archiving) or from the first event, and every checkpoint. A live
// spool may be trimmed while it is read; a pass that saw the floor move or a file vanish
// is done again.
func VerifyFiles(dir string, opts VerifyOptions) (Report, error) {
	for attempt := 1; ; attempt++ {
		floor, err := os.ReadFile(filepath.Join(dir, "spool.floor"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return Report{}, fmt.Errorf("audit: %w", err)
		}
		rep, err := verifyFilesOnce(dir, floor, opts)
		if err == nil || attempt == 20 {
			return rep, err
		}
		now, _ := os.ReadFile(filepath.Join(dir, "spool.floor"))
		if !errors.Is(err, os.ErrNotExist) && bytes.Equal(now, floor) {
			return rep, err // nothing was trimmed meanwhile: the failure stands
		}
	}
}

func verifyFilesOnce(dir string, floor []byte, opts VerifyOptions) (Report, error) {
	c := newChain(opts, 0, genesis, true)
	var fl floorMark
	if floor != nil {
		if err := json.Unmarshal(floor, &fl); err != nil {
			return Report{}, fmt.Errorf("audit: spool.floor: %w", err)
		}
		c.seq, c.prev = fl.Seq, fl.Hash
	}
	files, err := eventFiles(dir)
	if err != nil {
		return Report{}, err
	}
	for _, path := range files {
		if c.rep.Events == 0 && fl.Seq > 0 {
			// The trimmer records the floor before it deletes the files below it: a file
			// wholly at or below the floor is on its way out, not part of the chain.
			if e, err := lastEvent(path); err == nil && e.Seq <= fl.Seq {
				continue
			}
		}
		f, err := os.Open(path)
		if err != nil {
			return c.rep, fmt.Errorf("audit: %w", err)
		}
		err = c.lines(f, filepath.Base(path))
		f.Close()
		if err != nil {
			return c.rep, err
		}
	}
	return c.rep, nil
}
