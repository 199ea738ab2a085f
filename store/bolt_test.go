package store

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestBolt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "moltgate.db")
	b, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get("gateways", "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get on empty store: got %v, want ErrNotFound", err)
	}
	for _, k := range []string{"b", "a", "c"} {
		if err := b.Put("gateways", k, []byte("v-"+k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Delete("gateways", "c"); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete("nobucket", "c"); err != nil {
		t.Fatalf("delete in missing bucket: %v", err)
	}
	var keys []string
	if err := b.ForEach("gateways", func(k string, v []byte) error {
		if string(v) != "v-"+k {
			t.Errorf("value of %s: got %q", k, v)
		}
		keys = append(keys, k)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0] != "a" || keys[1] != "b" {
		t.Fatalf("keys: got %v, want [a b]", keys)
	}
	// Values survive a reopen, and a second open of a held file fails instead of sharing it.
	if _, err := OpenBolt(path); err == nil {
		t.Fatal("second open of a locked store succeeded")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	v, err := b2.Get("gateways", "a")
	if err != nil || string(v) != "v-a" {
		t.Fatalf("after reopen: got %q, %v", v, err)
	}
}

// Issue 16: a second open of a file another opener holds (a second moltgate serve on the
// same data directory) fails with ErrLocked, which says so, not with bbolt's "timeout".
func TestBoltHeldByAnotherIsErrLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "moltgate.db")
	first, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	second, err := OpenBolt(path)
	if err == nil {
		second.Close()
		t.Fatal("a second open of a held file succeeded")
	}
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "held by another process") {
		t.Fatalf("got %v, want ErrLocked", err)
	}
}
