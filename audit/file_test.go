package audit

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openTest(t *testing.T, dir string, max int64) *FileLog {
	t.Helper()
	l, err := OpenFile(FileConfig{Dir: dir, MaxFileBytes: max}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func emitN(t *testing.T, l *FileLog, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			err := l.Emit(t.Context(), Event{Type: TypePolicyDeny, Actor: Actor{Kind: "user", ID: fmt.Sprint("u", i)},
				Outcome: "deny", Reason: "not_a_member", Details: map[string]string{"b": "2", "a": "1"}})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

func TestChainAcrossFilesAndRestarts(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, 2048)
	emitN(t, l, 40)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2 := openTest(t, dir, 2048)
	emitN(t, l2, 10)
	l2.Close()
	files, _ := eventFiles(dir)
	if len(files) < 3 {
		t.Fatalf("rollover: got %d files, want several", len(files))
	}
	n, err := VerifyDir(dir)
	if err != nil || n != 50 {
		t.Fatalf("verify: got %d events, %v; want 50, nil", n, err)
	}
	if fi, _ := os.Stat(files[0]); fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestVerifyFindsTampering(t *testing.T) {
	tamper := map[string]func(lines [][]byte) [][]byte{
		"edited": func(ls [][]byte) [][]byte {
			ls[4] = bytes.Replace(ls[4], []byte(`"deny"`), []byte(`"allow"`), 1)
			return ls
		},
		"deleted":   func(ls [][]byte) [][]byte { return append(ls[:4], ls[5:]...) },
		"reordered": func(ls [][]byte) [][]byte { ls[4], ls[5] = ls[5], ls[4]; return ls },
		"inserted":  func(ls [][]byte) [][]byte { return append(ls[:4], append([][]byte{ls[2]}, ls[4:]...)...) },
		"garbage":   func(ls [][]byte) [][]byte { ls[4] = []byte("{not json"); return ls },
		// longer than a reader holds: named where it stands, like any line that is no event
		"overlong": func(ls [][]byte) [][]byte { ls[4] = bytes.Repeat([]byte("a"), maxLine+1); return ls },
	}
	for name, fn := range tamper {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			l := openTest(t, dir, 0)
			for i := range 8 {
				if err := l.Emit(t.Context(), Event{Type: TypeAuthnFailure, Outcome: "deny", Reason: fmt.Sprint("r", i)}); err != nil {
					t.Fatal(err)
				}
			}
			l.Close()
			path := filepath.Join(dir, "events-000001.jsonl")
			data, _ := os.ReadFile(path)
			lines := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
			out := bytes.Join(fn(lines), []byte("\n"))
			if err := os.WriteFile(path, append(out, '\n'), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := VerifyDir(dir)
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("got %v, want a VerifyError", err)
			}
			if ve.Line != 5 {
				t.Fatalf("named line %d, want 5: %v", ve.Line, ve)
			}
		})
	}
}

func TestCrashCutLastLineIsRemoved(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, 0)
	emitN(t, l, 3)
	l.Close()
	path := filepath.Join(dir, "events-000001.jsonl")
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"schema":1,"id":"half`)
	f.Close()
	l2 := openTest(t, dir, 0)
	emitN(t, l2, 1)
	l2.Close()
	if n, err := VerifyDir(dir); err != nil || n != 4 {
		t.Fatalf("got %d, %v; want 4 events and a good chain", n, err)
	}
}

func TestEmitAfterCloseFails(t *testing.T) {
	l := openTest(t, t.TempDir(), 0)
	if err := l.Ready(); err != nil {
		t.Fatalf("Ready when open: %v", err)
	}
	l.Close()
	if err := l.Ready(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ready after Close: %v, want ErrClosed", err)
	}
	if err := l.Emit(t.Context(), Event{Type: TypeAdminChange}); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("got %v, want closed error", err)
	}
}

func TestIDsSortByTime(t *testing.T) {
	a := newID(testTime(1))
	b := newID(testTime(2))
	if !(a < b) || len(a) != 26 {
		t.Fatalf("ids %s %s do not sort by time", a, b)
	}
}

func testTime(ms int64) time.Time { return time.UnixMilli(1_700_000_000_000 + ms) }

// When the next segment cannot be created, the event that needed it is refused, so is every
// later one (with the same error, also from Ready) until a restart, and nothing written
// before is lost: after a restart the chain continues and verifies.
func TestFailedRolloverIsStickyAndLosesNothing(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, 4096)
	// A directory where the second segment goes: creating the file fails, even for root.
	if err := os.Mkdir(filepath.Join(dir, "events-000002.jsonl"), 0o700); err != nil {
		t.Fatal(err)
	}
	written := 0
	var failed error
	for written < 100 {
		if failed = l.Emit(t.Context(), Event{Type: TypePolicyDeny, Outcome: "deny", Details: map[string]string{"n": fmt.Sprint(written)}}); failed != nil {
			break
		}
		written++
	}
	if failed == nil || written == 0 {
		t.Fatalf("%d events written, then %v: want a rollover failure after some", written, failed)
	}
	for range 3 {
		if err := l.Emit(t.Context(), Event{Type: TypePolicyDeny, Outcome: "deny"}); err == nil || err.Error() != failed.Error() {
			t.Fatalf("Emit after the failure: %v, want %v", err, failed)
		}
	}
	if err := l.Ready(); err == nil || err.Error() != failed.Error() {
		t.Fatalf("Ready: %v, want %v", err, failed)
	}
	l.Close()
	if err := os.Remove(filepath.Join(dir, "events-000002.jsonl")); err != nil {
		t.Fatal(err)
	}
	if n, err := VerifyDir(dir); err != nil || n != written {
		t.Fatalf("verify: %d events, %v; want %d", n, err, written)
	}
	l2 := openTest(t, dir, 4096)
	emitN(t, l2, 20)
	l2.Close()
	if n, err := VerifyDir(dir); err != nil || n != written+20 {
		t.Fatalf("verify after restart: %d events, %v; want %d", n, err, written+20)
	}
}

// A closed log deletes nothing: a shipper that acknowledges events after Close must not
// trim files that a log opened since on the same directory is reading.
func TestTrimAfterCloseDeletesNothing(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, 2048)
	emitN(t, l, 40)
	before, _ := eventFiles(dir)
	if len(before) < 3 {
		t.Fatalf("%d segments, want several", len(before))
	}
	l.Close()
	if err := l.trim(1 << 62); err != nil {
		t.Fatal(err)
	}
	if after, _ := eventFiles(dir); len(after) != len(before) {
		t.Fatalf("trim after Close deleted %d of %d segments", len(before)-len(after), len(before))
	}
	if n, err := VerifyDir(dir); err != nil || n != 40 {
		t.Fatalf("verify: %d events, %v; want 40", n, err)
	}
}
