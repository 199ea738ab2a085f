package browser_test

import (
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moltgate/moltgate/proxy/browser"
	"github.com/moltgate/moltgate/store"
)

func open(t *testing.T, kv browser.KV) *browser.Sessions {
	t.Helper()
	s, err := browser.New(browser.Config{}, kv, nil, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestLaunchCodeSingleUse: of many browsers racing with one code, exactly one signs in.
func TestLaunchCodeSingleUse(t *testing.T) {
	kv, err := store.OpenBolt(filepath.Join(t.TempDir(), "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })
	s := open(t, kv)
	code, _, err := s.Issue(browser.Grant{Gateway: "gw", UserID: "u"}, "/")
	if err != nil {
		t.Fatal(err)
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if _, _, _, err := s.Redeem(code, "gw"); err == nil {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("sign-ins with one code: got %d, want 1", wins.Load())
	}
}

// TestSessionsSurviveRestart: a session is in the store, not only in memory; a revoked
// one stays revoked after a restart, and the store holds no token.
func TestSessionsSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	kv, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, kv)
	keep, _, err := s.Start(browser.Grant{Gateway: "gw", UserID: "u"})
	if err != nil {
		t.Fatal(err)
	}
	gone, sess, err := s.Start(browser.Grant{Gateway: "gw", UserID: "u"})
	if err != nil {
		t.Fatal(err)
	}
	if _, found, err := s.Revoke(sess.ID); !found || err != nil {
		t.Fatalf("revoke: %v %v", found, err)
	}
	_ = kv.ForEach("browser.sessions", func(k string, v []byte) error {
		for _, tok := range []string{keep, gone} {
			if k == tok || contains(v, tok) {
				t.Fatalf("the store holds a session token")
			}
		}
		return nil
	})
	kv.Close()

	kv, err = store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	s = open(t, kv)
	if _, _, err := s.Lookup(keep, "gw"); err != nil {
		t.Fatalf("session after restart: %v", err)
	}
	if _, _, err := s.Lookup(gone, "gw"); err == nil {
		t.Fatal("revoked session valid after restart")
	}
}

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }
