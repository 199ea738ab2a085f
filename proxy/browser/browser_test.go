package browser_test

import (
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moltgate/moltgate/internal/testenv"
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

// TestLaunchCodeSingleUseAcrossReplicas: replicas on one Redis racing with one code sign in
// one browser, and a session revoked on one replica ends on another, closing what waits on
// it there (issue 11).
func TestLaunchCodeSingleUseAcrossReplicas(t *testing.T) {
	srv := testenv.Redis(t)
	var replicas []*browser.Sessions
	for range 3 {
		kv, err := store.OpenRedis(t.Context(), store.RedisConfig{Addr: srv.Addr})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { kv.Close() })
		replicas = append(replicas, open(t, kv))
	}
	code, _, err := replicas[0].Issue(browser.Grant{Gateway: "gw", UserID: "u"}, "/")
	if err != nil {
		t.Fatal(err)
	}
	var wins atomic.Int32
	var token atomic.Value
	var wg sync.WaitGroup
	for i := range 15 {
		wg.Go(func() {
			if tok, _, _, err := replicas[i%3].Redeem(code, "gw"); err == nil {
				wins.Add(1)
				token.Store(tok)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("sign-ins with one code across replicas: got %d, want 1", wins.Load())
	}
	tok := token.Load().(string)
	sess, ended, err := replicas[2].Lookup(tok, "gw")
	if err != nil {
		t.Fatalf("the session on another replica: %v", err)
	}
	if _, ok, err := replicas[1].Revoke(sess.ID); err != nil || !ok {
		t.Fatalf("revoke on a third replica: %v %v", ok, err)
	}
	// What the change stream tells each replica (serve's replicaView).
	if err := replicas[2].Changed("browser.sessions", sess.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
	default:
		t.Fatal("the session revoked on another replica goes on here")
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
