package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/moltgate/moltgate/internal/testenv"
)

// kv is what both backends promise; the conformance suite runs against each.
type kv interface {
	Get(bucket, key string) ([]byte, error)
	Put(bucket, key string, value []byte) error
	Delete(bucket, key string) error
	ForEach(bucket string, fn func(key string, value []byte) error) error
	ForEachPrefix(bucket, prefix string, fn func(key string, value []byte) error) error
	Swap(bucket, key string, old, new []byte) error
}

var (
	_ kv = (*Bolt)(nil)
	_ kv = (*Redis)(nil)
)

func backends(t *testing.T) map[string]func(t *testing.T) kv {
	return map[string]func(t *testing.T) kv{
		"bolt": func(t *testing.T) kv {
			b, err := OpenBolt(filepath.Join(t.TempDir(), "kv.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			return b
		},
		"redis": func(t *testing.T) kv {
			srv := testenv.Redis(t)
			r, err := OpenRedis(t.Context(), RedisConfig{Addr: srv.Addr})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
			return r
		},
	}
}

func TestBackendConformance(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			if _, err := s.Get("b", "missing"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("get missing: got %v, want ErrNotFound", err)
			}
			if err := s.ForEach("nobucket", func(string, []byte) error { return errors.New("called") }); err != nil {
				t.Fatalf("foreach on missing bucket: %v", err)
			}
			for _, k := range []string{"k2", "k10", "k1", "a/b"} {
				if err := s.Put("b", k, []byte("v-"+k)); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Put("other", "k1", []byte("x")); err != nil {
				t.Fatal(err)
			}
			v, err := s.Get("b", "k1")
			if err != nil || string(v) != "v-k1" {
				t.Fatalf("get: got %q, %v", v, err)
			}
			var keys []string
			if err := s.ForEach("b", func(k string, v []byte) error {
				if string(v) != "v-"+k {
					t.Errorf("value of %s: got %q", k, v)
				}
				keys = append(keys, k)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(keys) != "[a/b k1 k10 k2]" {
				t.Fatalf("keys: got %v, want [a/b k1 k10 k2] (key order)", keys)
			}
			stop := errors.New("stop")
			if err := s.ForEach("b", func(string, []byte) error { return stop }); !errors.Is(err, stop) {
				t.Fatalf("foreach error: got %v, want stop", err)
			}

			// A prefix walk sees exactly the keys that start with it, in key order; characters
			// a pattern language would read (Redis MATCH) are plain characters here.
			for _, k := range []string{`t*/1`, `t?/1`, `t[1]/1`, `t\/1`, `t-^/1`, "t/1", "t/2", "tt/1"} {
				if err := s.Put("p", k, []byte("v-"+k)); err != nil {
					t.Fatal(err)
				}
			}
			for prefix, want := range map[string]string{
				"k1": "[k1 k10]", "a/": "[a/b]", "zz": "[]", "": "[a/b k1 k10 k2]",
			} {
				var got []string
				if err := s.ForEachPrefix("b", prefix, func(k string, v []byte) error {
					if string(v) != "v-"+k {
						t.Errorf("value of %s: got %q", k, v)
					}
					got = append(got, k)
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(got) != want && !(want == "[]" && got == nil) {
					t.Fatalf("prefix %q: got %v, want %s", prefix, got, want)
				}
			}
			for prefix, want := range map[string]string{
				"t*/": "[t*/1]", "t?/": "[t?/1]", "t[1]/": "[t[1]/1]", `t\/`: `[t\/1]`, "t-^": "[t-^/1]", "t/": "[t/1 t/2]",
			} {
				var got []string
				if err := s.ForEachPrefix("p", prefix, func(k string, _ []byte) error { got = append(got, k); return nil }); err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(got) != want {
					t.Fatalf("prefix %q: got %v, want %s", prefix, got, want)
				}
			}
			if err := s.ForEachPrefix("nobucket", "x", func(string, []byte) error { return errors.New("called") }); err != nil {
				t.Fatalf("prefix walk of a missing bucket: %v", err)
			}
			if err := s.ForEachPrefix("b", "k", func(string, []byte) error { return stop }); !errors.Is(err, stop) {
				t.Fatalf("prefix walk error: got %v, want stop", err)
			}
			if err := s.Delete("b", "k10"); err != nil {
				t.Fatal(err)
			}
			if err := s.Delete("b", "k10"); err != nil {
				t.Fatalf("second delete: %v", err)
			}
			if _, err := s.Get("b", "k10"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("after delete: got %v", err)
			}
			// Binary values survive unchanged.
			bin := []byte{0, 1, 0xff, '\n', 0}
			if err := s.Put("b", "bin", bin); err != nil {
				t.Fatal(err)
			}
			if v, _ := s.Get("b", "bin"); string(v) != string(bin) {
				t.Fatalf("binary value: got %x", v)
			}

			// Swap: create-if-absent, compare-and-swap, compare-and-delete.
			swaps := []struct {
				name     string
				old, new []byte
				want     error
				after    string // "" means absent
			}{
				{"create absent", nil, []byte("one"), nil, "one"},
				{"create present", nil, []byte("two"), ErrConflict, "one"},
				{"stale old", []byte("zero"), []byte("two"), ErrConflict, "one"},
				{"matching old", []byte("one"), []byte("two"), nil, "two"},
				{"delete stale", []byte("one"), nil, ErrConflict, "two"},
				{"delete matching", []byte("two"), nil, nil, ""},
				{"swap absent", []byte("two"), []byte("three"), ErrConflict, ""},
			}
			for _, sw := range swaps {
				if err := s.Swap("cas", "k", sw.old, sw.new); !errors.Is(err, sw.want) {
					t.Fatalf("%s: got %v, want %v", sw.name, err, sw.want)
				}
				v, err := s.Get("cas", "k")
				if sw.after == "" && !errors.Is(err, ErrNotFound) || sw.after != "" && string(v) != sw.after {
					t.Fatalf("%s: after: got %q, %v, want %q", sw.name, v, err, sw.after)
				}
			}

			// Concurrent increments through Swap lose no update.
			if err := s.Put("cas", "n", []byte("0")); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					for range 25 {
						for {
							cur, err := s.Get("cas", "n")
							if err != nil {
								t.Error(err)
								return
							}
							var n int
							fmt.Sscan(string(cur), &n)
							err = s.Swap("cas", "n", cur, fmt.Append(nil, n+1))
							if err == nil {
								break
							}
							if !errors.Is(err, ErrConflict) {
								t.Error(err)
								return
							}
						}
					}
				})
			}
			wg.Wait()
			if v, _ := s.Get("cas", "n"); string(v) != "200" {
				t.Fatalf("concurrent swaps: got %s, want 200", v)
			}
		})
	}
}

// TestConcurrentWritesWhileWalking is issue 15's deadlock: walks whose callbacks read the
// store again (as Keys.Active does inside Keys.List), while other goroutines write values
// big enough to grow the file. In one bbolt read transaction a nested one waits for a
// writer that waits for the first to end: every store call of every tenant then hangs.
func TestConcurrentWritesWhileWalking(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			big := make([]byte, 8<<10)
			var writers, walkers sync.WaitGroup
			stop := make(chan struct{})
			for w := range 4 {
				writers.Go(func() {
					for i := range 150 {
						if err := s.Put("keys", fmt.Sprintf("t%d/k%04d", w, i), big); err != nil {
							t.Error(err)
							return
						}
					}
				})
				// Walkers go on for as long as the writers grow the file.
				walkers.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						err := s.ForEachPrefix("keys", fmt.Sprintf("t%d/", w), func(k string, _ []byte) error {
							_, err := s.Get("keys", k)
							return err
						})
						if err == nil {
							err = s.ForEachPrefix("keys", fmt.Sprintf("t%d/k00", w), func(k string, _ []byte) error {
								if err := s.Swap("seen", k, nil, []byte("1")); !errors.Is(err, ErrConflict) {
									return err
								}
								return nil
							})
						}
						if err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			testenv.WaitOrDump(t, &writers, time.Minute)
			close(stop)
			testenv.WaitOrDump(t, &walkers, time.Minute)
			n := 0
			if err := s.ForEach("keys", func(string, []byte) error { n++; return nil }); err != nil {
				t.Fatal(err)
			}
			if n != 600 {
				t.Fatalf("keys stored: got %d, want 600", n)
			}
		})
	}
}
