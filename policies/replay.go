package policies

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Replay: recorded decisions, in DIR/testdata/replay/, are decided again by the set in DIR;
// an outcome that changes fails `moltgate policy test DIR` unless the record is listed in
// DIR/testdata/replay/expected_changes.txt.
//
// A record is OPA's decision-log shape (decision_id, input, result), so the policy.deny and
// admin.deny events of the audit stream (`moltgate audit query` prints them one per line)
// drop in as they are, plus what it was decided with:
//
//	{"decision_id": "…", "input": {…policy input…}, "result": {"allow": false, "reason": "…", "status": 403},
//	 "data": {"gateways": [{…registry gateway…}], "platform_admins": ["…"],
//	          "tenant_keys": {"tenant": {"provider": {…data.tenant_keys entry…}}}}}
//
// Files: *.json (one record, or an array of them) and *.jsonl (one per line). Fields other
// than these four are ignored (an audit event's type, seq, hash, …); within input, unknown
// fields are errors, but for the audit's top-level "method", which is the request's. A
// record without data is decided with data.json's, when the directory has one. Result
// compares allow and reason, and status and scopes when the record has them.

// ReplayDir is where a policy directory keeps its recorded decisions.
const ReplayDir = "testdata/replay"

// ErrReplayChanged is returned by Replay when an outcome changed that was not listed.
var ErrReplayChanged = errors.New("recorded decisions changed")

// replayRecord is one recorded decision.
type replayRecord struct {
	DecisionID string          `json:"decision_id"`
	Input      json.RawMessage `json:"input"`
	Result     *Decision       `json:"result"`
	Data       *ReplayData     `json:"data"`
	at         string          // file:line
	input      Input
}

func (r *replayRecord) name() string {
	if r.DecisionID != "" {
		return r.DecisionID
	}
	return r.at
}

// ReplayResult is one record decided again.
type ReplayResult struct {
	Name     string   // the decision id, else file:line
	At       string   // file:line
	Recorded Decision // as recorded
	Now      Decision // as the set decides it
	Err      string   // the set failed to decide it (Now is the fail-closed refusal)
	Changed  bool
	Expected bool // listed in expected_changes.txt
}

// ReplayReport is the outcome of Replay.
type ReplayReport struct {
	Results []ReplayResult
	// Unused names expected_changes.txt lists that no record has.
	Unused []string
}

// Replay decides every record in dir's testdata/replay with the set in dir (loaded as
// serve loads it, gate included) and compares. It returns ErrReplayChanged, naming each,
// when an outcome changed that expected_changes.txt does not list, or when the list names a
// record that does not exist; a malformed record is an error naming its file and line. A
// directory without testdata/replay replays nothing.
func Replay(ctx context.Context, dir string) (ReplayReport, error) {
	var rep ReplayReport
	root := filepath.Join(dir, filepath.FromSlash(ReplayDir))
	records, expected, err := readReplay(root)
	if err != nil || len(records) == 0 {
		return rep, err
	}
	e, err := New(ctx, Config{Dir: dir}, nil, nil)
	if err != nil {
		return rep, err
	}
	var changed []string
	for _, r := range records {
		if err := r.Data.Apply(ctx, e); err != nil {
			return rep, fmt.Errorf("policies: replay %s: %w", r.at, err)
		}
		now, err := e.Decide(ctx, &r.input)
		res := ReplayResult{Name: r.name(), At: r.at, Recorded: *r.Result, Now: now, Changed: !sameRecorded(*r.Result, now)}
		if err != nil {
			res.Err = err.Error()
		}
		_, res.Expected = expected[res.Name]
		delete(expected, res.Name)
		if res.Changed && !res.Expected {
			changed = append(changed, fmt.Sprintf("%s (%s): recorded %s, now %s", res.Name, res.At, decisionLine(res.Recorded), decisionLine(now)))
		}
		rep.Results = append(rep.Results, res)
	}
	for name := range expected {
		rep.Unused = append(rep.Unused, name)
	}
	slices.Sort(rep.Unused)
	var errs []error
	for _, c := range changed {
		errs = append(errs, errors.New(c))
	}
	for _, u := range rep.Unused {
		errs = append(errs, fmt.Errorf("expected_changes.txt lists %s, which no record has", u))
	}
	if len(errs) > 0 {
		return rep, fmt.Errorf("policies: replay: %w:\n%w", ErrReplayChanged, errors.Join(errs...))
	}
	return rep, nil
}

// sameRecorded compares what a record holds of a decision: allow and reason, status and
// scopes when recorded.
func sameRecorded(rec, now Decision) bool {
	return rec.Allow == now.Allow && rec.Reason == now.Reason &&
		(rec.Status == 0 || rec.Status == now.Status) && (rec.Scopes == nil || slices.Equal(rec.Scopes, now.Scopes))
}

func decisionLine(d Decision) string {
	s := "deny"
	if d.Allow {
		s = "allow"
	}
	s += " " + d.Reason
	if d.Status != 0 {
		s += fmt.Sprintf(" %d", d.Status)
	}
	return s
}

// readReplay reads the records, the default data and the expected changes under root.
func readReplay(root string) ([]*replayRecord, map[string]struct{}, error) {
	expected := map[string]struct{}{}
	if _, err := os.Stat(root); errors.Is(err, fs.ErrNotExist) {
		return nil, expected, nil
	}
	var def ReplayData
	if b, err := os.ReadFile(filepath.Join(root, "data.json")); err == nil {
		if err := strictJSON(b, &def); err != nil {
			return nil, nil, fmt.Errorf("policies: replay: data.json: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("policies: replay: %w", err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "expected_changes.txt")); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if name, _, _ := strings.Cut(line, "#"); strings.TrimSpace(name) != "" {
				expected[strings.TrimSpace(name)] = struct{}{}
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("policies: replay: %w", err)
	}
	files, err := filepath.Glob(filepath.Join(root, "*.json*"))
	if err != nil {
		return nil, nil, fmt.Errorf("policies: replay: %w", err)
	}
	var records []*replayRecord
	for _, f := range files {
		if filepath.Base(f) == "data.json" {
			continue
		}
		rs, err := readRecords(f)
		if err != nil {
			return nil, nil, err
		}
		for _, r := range rs {
			if r.Data == nil {
				r.Data = &def
			}
		}
		records = append(records, rs...)
	}
	return records, expected, nil
}

// readRecords reads one file of records.
func readRecords(path string) ([]*replayRecord, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policies: replay: %w", err)
	}
	name := filepath.Base(path)
	var out []*replayRecord
	add := func(line int, raw []byte) error {
		r := &replayRecord{at: fmt.Sprintf("%s:%d", name, line)}
		if err := json.Unmarshal(raw, r); err != nil {
			return fmt.Errorf("policies: replay %s: %w", r.at, err)
		}
		if err := r.check(); err != nil {
			return fmt.Errorf("policies: replay %s: %w", r.at, err)
		}
		out = append(out, r)
		return nil
	}
	switch {
	case strings.HasSuffix(name, ".jsonl"):
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, maxBody)
		for n := 1; sc.Scan(); n++ {
			if len(bytes.TrimSpace(sc.Bytes())) == 0 {
				continue
			}
			if err := add(n, sc.Bytes()); err != nil {
				return nil, err
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("policies: replay %s: %w", name, err)
		}
	case strings.HasSuffix(name, ".json"):
		trimmed := bytes.TrimSpace(b)
		if len(trimmed) == 0 || trimmed[0] != '[' {
			return out, add(1, b)
		}
		var raws []json.RawMessage
		if err := json.Unmarshal(b, &raws); err != nil {
			return nil, fmt.Errorf("policies: replay %s: %w", name, err)
		}
		for i, raw := range raws {
			if err := add(i+1, raw); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// maxBody bounds one line of a .jsonl file.
const maxBody = 1 << 20

// check decodes the record's input strictly and requires a result.
func (r *replayRecord) check() error {
	if len(r.Input) == 0 || r.Result == nil {
		return errors.New("a record needs input and result")
	}
	// The audit records the request method at the top of its input subset.
	var in struct {
		Input
		Method string `json:"method"`
	}
	if err := strictJSON(r.Input, &in); err != nil {
		return fmt.Errorf("input: %w", err)
	}
	r.input = in.Input
	if r.input.Request.Method == "" {
		r.input.Request.Method = in.Method
	}
	return nil
}

// strictJSON decodes one JSON value into v, refusing unknown fields.
func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
