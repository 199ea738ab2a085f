package audit

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var quiet = slog.New(slog.DiscardHandler)

// runLog runs l in the background until the test ends.
func runLog(t *testing.T, l *FileLog) { runLogEvery(t, l, 5*time.Millisecond) }

// runLogEvery runs l, syncing every interval, until the test or benchmark ends.
func runLogEvery(tb testing.TB, l *FileLog, interval time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx, interval); close(done) }()
	tb.Cleanup(func() { cancel(); <-done })
}

// waitFor polls cond until it holds or 20 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitForState(t, what, func() (bool, string) { return cond(), "" })
}

// waitForState polls cond until it holds or 20 s pass; on a timeout the test fails with
// the state cond last described.
func waitForState(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 20s waiting for %s; last state: %s", what, cmp.Or(state, "(none)"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func emitMarked(t *testing.T, l *FileLog, from, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for i := from; i < from+n; i++ {
		wg.Go(func() {
			if err := l.Emit(context.Background(), Event{Type: TypeAdminChange, Outcome: "success", Tenant: "t",
				Details: map[string]string{"n": fmt.Sprint(i)}}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

// archivedMarkers reads every event of an archive and counts each "n" detail.
func archivedMarkers(t *testing.T, dir string) map[string]int {
	t.Helper()
	got := map[string]int{}
	err := Reader{ArchiveDir: dir}.Query(Query{}, func(e Event) bool {
		if n, ok := e.Details["n"]; ok {
			got[n]++
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func checkMarkers(t *testing.T, got map[string]int, n int) {
	t.Helper()
	for i := range n {
		if c := got[fmt.Sprint(i)]; c != 1 {
			t.Fatalf("event %d archived %d times, want exactly once", i, c)
		}
	}
	if len(got) != n {
		t.Fatalf("archive holds %d marked events, want %d", len(got), n)
	}
}

// Issue 5: the embedded mode archives the spool directly, trims it only after, and the
// chain verifies in the spool, across restarts, and in the archive.
func TestSpoolToArchiveTrimsAndVerifies(t *testing.T) {
	dir := t.TempDir()
	arch, err := OpenArchive(ArchiveConfig{Dir: filepath.Join(dir, "archive")}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(nil)
	cfg := FileConfig{Dir: filepath.Join(dir, "spool"), MaxFileBytes: 4096, Replica: "r1", Signer: key, CheckpointEvery: 50,
		Sinks: []Sink{arch.Sink("r1", 200, time.Millisecond)}}
	l, err := OpenFile(cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	runLog(t, l)
	emitMarked(t, l, 0, 600)
	waitFor(t, "archive to catch up", func() bool { s, _ := l.Head(); a, _ := arch.Head("r1"); return a == s })
	waitFor(t, "spool trim", func() bool { files, _ := eventFiles(cfg.Dir); return len(files) <= 2 })
	l.Close()

	// Restart: the chain continues after the trimmed part (spool.floor).
	l2, err := OpenFile(cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	runLog(t, l2)
	emitMarked(t, l2, 600, 100)
	waitFor(t, "archive after restart", func() bool { s, _ := l2.Head(); a, _ := arch.Head("r1"); return a == s })
	if _, err := VerifyFiles(cfg.Dir, VerifyOptions{PublicKey: key.Public().(ed25519.PublicKey)}); err != nil {
		t.Fatalf("spool: %v", err)
	}
	reps, err := VerifyArchive(arch.Dir(), VerifyOptions{PublicKey: key.Public().(ed25519.PublicKey)})
	if err != nil {
		t.Fatalf("archive: %v", err)
	}
	if r := reps["r1"]; r.First != 1 || r.Checkpoints < 12 {
		t.Fatalf("archive report %+v: want the chain from seq 1 with a checkpoint every 50 events", r)
	}
	checkMarkers(t, archivedMarkers(t, arch.Dir()), 700)
}

// Segments written before a restart and trimmed after it record the right floor: the hash
// of their last event, known from the next segment's first event without rereading them.
func TestTrimAfterRestartRecordsTheFloor(t *testing.T) {
	dir := t.TempDir()
	arch, err := OpenArchive(ArchiveConfig{Dir: filepath.Join(dir, "archive")}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	cfg := FileConfig{Dir: filepath.Join(dir, "spool"), MaxFileBytes: 4096, Replica: "r",
		Sinks: []Sink{&gatedSink{Sink: arch.Sink("r", 1000, time.Millisecond), open: make(chan struct{})}}}
	l, err := OpenFile(cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	runLog(t, l)
	emitMarked(t, l, 0, 300) // the sink is down: every segment stays
	l.Close()
	if files, _ := eventFiles(cfg.Dir); len(files) < 5 {
		t.Fatalf("%d segments, want several", len(files))
	}

	cfg.Sinks = []Sink{arch.Sink("r", 1000, time.Millisecond)}
	l2, err := OpenFile(cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	runLog(t, l2)
	waitFor(t, "spool trim", func() bool { files, _ := eventFiles(cfg.Dir); return len(files) <= 2 })
	var floor floorMark
	data, err := os.ReadFile(filepath.Join(cfg.Dir, "spool.floor"))
	if err != nil || json.Unmarshal(data, &floor) != nil || floor.Seq == 0 {
		t.Fatalf("spool.floor %q: %v", data, err)
	}
	var atFloor Event
	err = Reader{ArchiveDir: arch.Dir()}.Query(Query{}, func(e Event) bool {
		if e.Seq == floor.Seq {
			atFloor = e
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if atFloor.Seq != floor.Seq || atFloor.Hash != floor.Hash {
		t.Fatalf("floor %+v, but event %d has hash %q", floor, atFloor.Seq, atFloor.Hash)
	}
	emitMarked(t, l2, 300, 10)
	if _, err := VerifyFiles(cfg.Dir, VerifyOptions{}); err != nil {
		t.Fatalf("spool: %v", err)
	}
}

func TestSpoolFullFailsClosedThenRecovers(t *testing.T) {
	dir := t.TempDir()
	arch, err := OpenArchive(ArchiveConfig{Dir: filepath.Join(dir, "archive")}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	sink := &gatedSink{Sink: arch.Sink("r", 1000, time.Millisecond), open: make(chan struct{})}
	reg := prometheus.NewRegistry()
	l, err := OpenFile(FileConfig{Dir: filepath.Join(dir, "spool"), MaxFileBytes: 2048, SpoolMaxBytes: 16 << 10,
		Replica: "r", Sinks: []Sink{sink}, Metrics: reg}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	runLog(t, l)
	n := 0
	var full error
	for ; n < 1000; n++ {
		if full = l.Emit(t.Context(), Event{Type: TypePolicyDeny, Outcome: "deny", Details: map[string]string{"n": fmt.Sprint(n)}}); full != nil {
			break
		}
	}
	if !errors.Is(full, ErrSpoolFull) || !errors.Is(l.Ready(), ErrSpoolFull) {
		t.Fatalf("after %d events: Emit %v, Ready %v; want ErrSpoolFull", n, full, l.Ready())
	}
	if a, f := testutil.ToFloat64(l.m.spoolAlarm), testutil.ToFloat64(l.m.spoolFull); a != 1 || f != 1 {
		t.Fatalf("alarm %v full %v, want both 1", a, f)
	}
	close(sink.open) // the archive comes back
	waitFor(t, "spool to drain", func() bool { return l.Ready() == nil })
	if err := l.Emit(t.Context(), Event{Type: TypePolicyDeny, Outcome: "deny", Details: map[string]string{"n": fmt.Sprint(n)}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "archive", func() bool { s, _ := l.Head(); a, _ := arch.Head("r"); return a == s })
	checkMarkers(t, archivedMarkers(t, arch.Dir()), n+1)
}

// gatedSink fails until open is closed.
type gatedSink struct {
	Sink
	open chan struct{}
}

func (g *gatedSink) Batch() (int, time.Duration) { return g.Sink.(Batcher).Batch() }

func (g *gatedSink) Write(ctx context.Context, floor uint64, recs []Record) (uint64, error) {
	select {
	case <-g.open:
		return g.Sink.Write(ctx, floor, recs)
	default:
		return 0, errors.New("sink down")
	}
}

func TestDurableEmit(t *testing.T) {
	l, err := OpenFile(FileConfig{Dir: t.TempDir(), Durable: true}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing syncs yet: a durable Emit waits for an fsync and so cannot return in time.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := l.Emit(ctx, Event{Type: TypeAdminChange, Outcome: "success"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("durable Emit with no fsync: %v, want it to wait past its deadline", err)
	}
	runLog(t, l)
	emitMarked(t, l, 1, 199)
	if n, err := VerifyDir(l.cfg.Dir); err != nil || n != 200 {
		t.Fatalf("got %d, %v", n, err)
	}
}

// A durable Emit whose fsync fails reports it (the event is written, not known to be on
// disk), and the next fsync that works covers that event too.
func TestDurableEmitReportsAFailedFsync(t *testing.T) {
	reg := prometheus.NewRegistry()
	l, err := OpenFile(FileConfig{Dir: t.TempDir(), Durable: true, Metrics: reg}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	var fail atomic.Bool
	var synced atomic.Int64
	l.fsync = func(f *os.File) error {
		if fail.Load() {
			return errors.New("injected EIO")
		}
		synced.Add(1)
		return f.Sync()
	}
	runLog(t, l)
	if err := l.Emit(t.Context(), Event{Type: TypeAdminChange, Outcome: "success"}); err != nil {
		t.Fatal(err)
	}
	fail.Store(true)
	err = l.Emit(t.Context(), Event{Type: TypeAdminChange, Outcome: "success"})
	if err == nil || !strings.Contains(err.Error(), "injected EIO") {
		t.Fatalf("durable Emit with a failing fsync: %v, want the fsync error", err)
	}
	if got := testutil.ToFloat64(l.m.emitErrors); got != 1 {
		t.Fatalf("emit errors %v, want 1", got)
	}
	fail.Store(false)
	before := synced.Load()
	waitFor(t, "an fsync of the event whose fsync failed", func() bool { return synced.Load() > before })
	if err := l.Emit(t.Context(), Event{Type: TypeAdminChange, Outcome: "success"}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if n, err := VerifyDir(l.cfg.Dir); err != nil || n != 3 {
		t.Fatalf("got %d, %v; want all 3 events", n, err)
	}
}

func TestCheckpointsCatchARewrite(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(nil)
	otherPub, otherKey, _ := ed25519.GenerateKey(nil)
	pub := key.Public().(ed25519.PublicKey)
	dir := t.TempDir()
	l, err := OpenFile(FileConfig{Dir: dir, Signer: key, CheckpointEvery: 5, Replica: "r"}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		l.Emit(t.Context(), Event{Type: TypeAuthnFailure, Outcome: "deny", Reason: fmt.Sprint("r", i)})
	}
	l.Close()
	rep, err := VerifyFiles(dir, VerifyOptions{PublicKey: pub})
	if err != nil || rep.Checkpoints != 3 || rep.Unanchored != 0 {
		t.Fatalf("got %+v, %v; want 3 checkpoints, the last at the end", rep, err)
	}
	if _, err := VerifyFiles(dir, VerifyOptions{PublicKey: otherPub}); err == nil {
		t.Fatal("a checkpoint by another key passed with a trusted key")
	}

	// An attacker edits event 3 and recomputes every hash after it, re-signing checkpoints
	// with their own key: the chain is whole, the checkpoints name the wrong key.
	path := filepath.Join(dir, "events-000001.jsonl")
	rewrite := func(signer ed25519.PrivateKey) {
		data, _ := os.ReadFile(path)
		var out bytes.Buffer
		prev := genesis
		for i, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
			var e Event
			json.Unmarshal(line, &e)
			if i == 2 {
				e.Reason = "nothing_happened"
			}
			e.Prev = prev
			if e.Type == TypeCheckpoint {
				e.Details["head_hash"] = prev
				if signer != nil {
					e.Details["key"] = PublicKeyHex(signer.Public().(ed25519.PublicKey))
					e.Details["sig"] = b64(ed25519.Sign(signer, checkpointMessage(e.Replica, e.Seq-1, prev)))
				}
			}
			b, _ := e.seal()
			out.Write(b)
			prev = e.Hash
		}
		os.WriteFile(path, out.Bytes(), 0o600)
	}
	rewrite(nil)
	_, err = VerifyFiles(dir, VerifyOptions{})
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Seq != 6 || !strings.Contains(ve.Why, "signature") {
		t.Fatalf("rewrite without the key: got %v, want the first checkpoint (seq 6) to fail", err)
	}
	rewrite(otherKey)
	if _, err := VerifyFiles(dir, VerifyOptions{}); err != nil {
		t.Fatalf("self-consistent rewrite: %v (only a trusted key can catch it)", err)
	}
	_, err = VerifyFiles(dir, VerifyOptions{PublicKey: pub})
	if !errors.As(err, &ve) || ve.Seq != 6 || !strings.Contains(ve.Why, "trusted") {
		t.Fatalf("rewrite with another key: got %v, want seq 6 refused by the trusted key", err)
	}
}

func TestArchiveTamperingIsNamed(t *testing.T) {
	cases := map[string]func(t *testing.T, seg string){
		"edited": func(t *testing.T, seg string) {
			rewriteSegment(t, seg, func(ls [][]byte) [][]byte {
				ls[4] = bytes.Replace(ls[4], []byte(`"success"`), []byte(`"deny"`), 1)
				return ls
			})
		},
		"deleted": func(t *testing.T, seg string) {
			rewriteSegment(t, seg, func(ls [][]byte) [][]byte { return append(ls[:4], ls[5:]...) })
		},
		"reordered": func(t *testing.T, seg string) {
			rewriteSegment(t, seg, func(ls [][]byte) [][]byte { ls[4], ls[5] = ls[5], ls[4]; return ls })
		},
		"inserted": func(t *testing.T, seg string) {
			rewriteSegment(t, seg, func(ls [][]byte) [][]byte { return append(ls[:4], append([][]byte{ls[1]}, ls[4:]...)...) })
		},
	}
	for name, tamper := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			arch, _ := OpenArchive(ArchiveConfig{Dir: dir}, quiet)
			l, _ := OpenFile(FileConfig{Dir: t.TempDir(), Replica: "r"}, quiet)
			emitMarked(t, l, 0, 20)
			l.Close()
			recs, err := l.readRange(l.snapshot(), 1, 100, 1<<20, nil)
			if err != nil || len(recs) != 20 {
				t.Fatalf("read spool: %d, %v", len(recs), err)
			}
			arch.Append("r", recs[:10])
			arch.Append("r", recs[10:])
			segs, _ := filepath.Glob(filepath.Join(dir, "r", "*.jsonl.gz"))
			if len(segs) != 2 {
				t.Fatalf("%d segments, want 2", len(segs))
			}
			tamper(t, segs[1])
			_, err = VerifyArchive(dir, VerifyOptions{})
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Seq != 15 || ve.Line != 5 {
				t.Fatalf("got %v, want seq 15 at line 5 of the second segment named", err)
			}
		})
	}
	t.Run("segment removed", func(t *testing.T) {
		dir := t.TempDir()
		arch, _ := OpenArchive(ArchiveConfig{Dir: dir}, quiet)
		l, _ := OpenFile(FileConfig{Dir: t.TempDir(), Replica: "r"}, quiet)
		emitMarked(t, l, 0, 30)
		l.Close()
		recs, _ := l.readRange(l.snapshot(), 1, 100, 1<<20, nil)
		arch.Append("r", recs[:10])
		arch.Append("r", recs[10:20])
		arch.Append("r", recs[20:])
		ms, _ := filepath.Glob(filepath.Join(dir, "r", "*"))
		for _, p := range ms {
			if strings.Contains(p, fmt.Sprintf("%020d-", 11)) {
				os.Remove(p)
			}
		}
		_, err := VerifyArchive(dir, VerifyOptions{})
		var ve *VerifyError
		if !errors.As(err, &ve) || ve.Seq != 11 {
			t.Fatalf("got %v, want seq 11 missing", err)
		}
	})
}

func rewriteSegment(t *testing.T, path string, fn func([][]byte) [][]byte) {
	t.Helper()
	f, _ := os.Open(path)
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var lines [][]byte
	sc := bufio.NewScanner(zr)
	for sc.Scan() {
		lines = append(lines, bytes.Clone(sc.Bytes()))
	}
	f.Close()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(append(bytes.Join(fn(lines), []byte("\n")), '\n'))
	zw.Close()
	os.WriteFile(path, buf.Bytes(), 0o600)
}

// Issue 5: nothing is deleted before its time; deletion after it is an audit event, and the
// chain still verifies across the deleted segment.
func TestRetentionDeletesOnlyExpiredAndAuditsIt(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	dir := t.TempDir()
	if _, err := OpenArchive(ArchiveConfig{Dir: dir, Retention: 24 * time.Hour}, quiet); err == nil {
		t.Fatal("a retention below the minimum was accepted")
	}
	arch, _ := OpenArchive(ArchiveConfig{Dir: dir, Now: func() time.Time { return clock() }}, quiet)
	spool := t.TempDir()
	l, _ := OpenFile(FileConfig{Dir: spool, Replica: "r"}, quiet)
	defer l.Close()
	emitMarked(t, l, 0, 10)
	recs, _ := l.readRange(l.snapshot(), 1, 100, 1<<20, nil)
	arch.Append("r", recs[:5])
	arch.Append("r", recs[5:])
	if n, err := arch.Expire(t.Context(), l.Emit); err != nil || n != 0 {
		t.Fatalf("before retention: deleted %d, %v", n, err)
	}
	clock = func() time.Time { return now.Add(DefaultRetention + time.Hour) }
	if n, err := arch.Expire(t.Context(), l.Emit); err != nil || n != 2 {
		t.Fatalf("after retention: deleted %d, %v; want 2", n, err)
	}
	var deletions []Event
	Reader{SpoolDir: spool}.Query(Query{Type: TypeRetentionDelete}, func(e Event) bool { deletions = append(deletions, e); return true })
	if len(deletions) != 2 || deletions[0].Details["first_seq"] != "1" || deletions[1].Details["last_seq"] != "10" {
		t.Fatalf("deletion events %+v", deletions)
	}
	if _, err := VerifyArchive(dir, VerifyOptions{}); err != nil {
		t.Fatalf("tombstones do not bridge the chain: %v", err)
	}
	// Appending continues after the deleted segments.
	emitMarked(t, l, 10, 3)
	recs, _ = l.readRange(l.snapshot(), 11, 100, 1<<20, nil)
	if held, err := arch.Append("r", recs); err != nil || held != 15 {
		t.Fatalf("append after retention: %d, %v", held, err)
	}
	if _, err := VerifyArchive(dir, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestDecisionEventsCarryOPAFields(t *testing.T) {
	dir := t.TempDir()
	l, _ := OpenFile(FileConfig{Dir: dir, Replica: "r"}, quiet)
	l.Emit(t.Context(), Event{Type: TypePolicyDeny, Actor: Actor{Kind: "user", ID: "u1"}, Tenant: "t", Gateway: "g",
		Action: "tools.invoke", Outcome: "deny", Reason: "role_forbids", PolicyRevision: "rev1",
		Details: map[string]string{"method": "POST"}})
	l.Close()
	data, _ := os.ReadFile(filepath.Join(dir, "events-000001.jsonl"))
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"decision_id", "path", "input", "result", "timestamp"} {
		if _, ok := m[k]; !ok {
			t.Fatalf("no %q in %s", k, data)
		}
	}
	if m["path"] != DecisionPath || m["decision_id"] != m["id"] || m["result"].(map[string]any)["allow"] != false {
		t.Fatalf("OPA fields wrong: %s", data)
	}
	if n, err := VerifyDir(dir); err != nil || n != 1 {
		t.Fatal(n, err)
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// Query on a live log reads the archive, then the spool, once per event; a last line that
// a concurrent Emit has only half written is not read.
func TestLiveQueryReadsArchiveThenSpoolOnce(t *testing.T) {
	dir := t.TempDir()
	arch, err := OpenArchive(ArchiveConfig{Dir: filepath.Join(dir, "archive")}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	l, err := OpenFile(FileConfig{Dir: filepath.Join(dir, "spool"), MaxFileBytes: 2048, Replica: "q",
		ArchiveDir: arch.Dir(), Sinks: []Sink{arch.Sink("q", 50, time.Millisecond)}}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	runLog(t, l)
	emitMarked(t, l, 0, 200)
	waitFor(t, "archive to catch up", func() bool { s, _ := l.Head(); a, _ := arch.Head("q"); return a == s })
	// Trimmed, so the early events are in the archive only and the query must read it.
	waitFor(t, "spool trim", func() bool { files, _ := eventFiles(filepath.Join(dir, "spool")); return len(files) <= 2 })
	files, _ := eventFiles(filepath.Join(dir, "spool"))
	f, err := os.OpenFile(files[len(files)-1], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"schema":2,"id":"half`)
	f.Close()
	got := map[string]int{}
	if err := l.Query(Query{Tenant: "t"}, func(e Event) bool { got[e.Details["n"]]++; return true }); err != nil {
		t.Fatal(err)
	}
	checkMarkers(t, got, 200)
}

// A shipper reads the spool in batches from where the last one stopped; across segment
// boundaries, a live last segment and a jump back (a sink that lost events), it reads the
// same records as a read from the start.
func TestReadRangeContinuesFromLastPosition(t *testing.T) {
	l, err := OpenFile(FileConfig{Dir: t.TempDir(), MaxFileBytes: 4096}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	emitN(t, l, 100)
	all, err := l.readRange(l.snapshot(), 1, 1000, 1<<20, nil)
	if err != nil || len(all) != 100 {
		t.Fatalf("read from the start: %d records, %v", len(all), err)
	}
	var pos readPos
	var got []Record
	for from := uint64(1); from <= uint64(len(all)); {
		if from > 55 && len(all) == 100 {
			emitN(t, l, 20) // the last segment grows between batches
			more, _ := l.readRange(l.snapshot(), 1, 1000, 1<<20, nil)
			all = more
		}
		recs, err := l.readRange(l.snapshot(), from, 7, 1<<20, &pos)
		if err != nil || len(recs) == 0 {
			t.Fatalf("batch from %d: %d records, %v", from, len(recs), err)
		}
		got = append(got, recs...)
		from += uint64(len(recs))
	}
	back, err := l.readRange(l.snapshot(), 30, 5, 1<<20, &pos) // a jump back: from the start again
	if err != nil || len(back) != 5 || back[0].Seq != 30 || string(back[0].Line) != string(all[29].Line) {
		t.Fatalf("jump back to 30: %+v %v", back, err)
	}
	if len(got) != 120 {
		t.Fatalf("batches read %d records, want 120", len(got))
	}
	for i, r := range got {
		if r.Seq != all[i].Seq || string(r.Line) != string(all[i].Line) {
			t.Fatalf("record %d: seq %d, want %d (or its line differs)", i, r.Seq, all[i].Seq)
		}
	}
}

// A recent segment cannot be made to vanish by deleting it and marking its manifest
// deleted: verify refuses a tombstone dated before the segment's retention ended.
func TestVerifyArchiveRefusesEarlyTombstone(t *testing.T) {
	dir := t.TempDir()
	arch, _ := OpenArchive(ArchiveConfig{Dir: dir}, quiet)
	l, _ := OpenFile(FileConfig{Dir: t.TempDir(), Replica: "r"}, quiet)
	defer l.Close()
	emitMarked(t, l, 0, 10)
	recs, _ := l.readRange(l.snapshot(), 1, 100, 1<<20, nil)
	arch.Append("r", recs[:5])
	arch.Append("r", recs[5:])
	ms, err := readManifests(filepath.Join(dir, "r"))
	if err != nil || len(ms) != 2 {
		t.Fatalf("manifests %v %v", ms, err)
	}
	m := ms[1]
	now := time.Now()
	m.Deleted = &now
	if err := os.Remove(filepath.Join(dir, "r", m.Segment())); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(filepath.Join(dir, "r", m.fileName()), mustJSON(m)); err != nil {
		t.Fatal(err)
	}
	_, err = VerifyArchive(dir, VerifyOptions{})
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Seq != m.FirstSeq || !strings.Contains(ve.Why, "before its retention") {
		t.Fatalf("verify of an archive with a segment deleted early: %v", err)
	}
}
