package policies

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/moltgate/moltgate/registry"
	"github.com/moltgate/moltgate/store"
)

// Issue 12: promote makes the shadowed candidate's exact revision live and records it in
// the store, where another engine loads it; rollback re-activates the set before it, down
// to the configured one; a candidate changed on disk since it was shadowed is not promoted.
func TestPromoteAndRollback(t *testing.T) {
	ctx := t.Context()
	kv, err := store.OpenBolt(filepath.Join(t.TempDir(), "moltgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })
	cand := writeSet(t, false, nil, map[string]string{"retire.rego": retireRoute(t)})
	e := newTestEngine(t, Config{ShadowDir: cand}, nil)
	t.Cleanup(e.Close)
	gw := registry.Gateway{ID: "gw1", Tenant: "t1", Owner: "owner", AuthMode: registry.AuthToken}
	if err := e.SetGateways(ctx, []registry.Gateway{gw}); err != nil {
		t.Fatal(err)
	}
	retired := &Input{Subject: Subject{Kind: SubjectUser, ID: "owner"}, Gateway: GatewayRef{ID: "gw1"},
		Request: Request{Method: "GET", Path: "/retired", Host: "gw1.gw.example.test"}, Protocol: ProtocolHTTP, Action: "http.read"}
	allowed := func() bool {
		t.Helper()
		d, err := e.Decide(ctx, retired)
		if err != nil {
			t.Fatal(err)
		}
		return d.Allow
	}
	configured, candidate := e.Revision(), e.ShadowRevision()
	revs := NewRevisions(e, kv)

	if _, err := revs.Rollback(ctx); !errors.Is(err, ErrNoRollback) {
		t.Fatalf("rollback with nothing promoted: got %v, want ErrNoRollback", err)
	}
	if _, err := revs.Promote(ctx, "0123456789ab"); !errors.Is(err, ErrRevisionMismatch) || e.Revision() != configured {
		t.Fatalf("promote of another revision: got %v (live %s), want ErrRevisionMismatch and %s live", err, e.Revision(), configured)
	}
	st, err := revs.Promote(ctx, candidate)
	if err != nil {
		t.Fatal(err)
	}
	if want := (RevisionState{Live: candidate, Promoted: true, Previous: "configured", Candidate: candidate}); st != want {
		t.Fatalf("after promote: got %+v, want %+v", st, want)
	}
	if allowed() {
		t.Fatal("after promote: /retired allowed, want the candidate's refusal")
	}

	// Another engine on the same store loads the promoted revision, not its own directory.
	other := newTestEngine(t, Config{}, nil)
	if _, err := NewRevisions(other, kv).Load(ctx); err != nil {
		t.Fatal(err)
	}
	if got := other.Revision(); got != candidate {
		t.Errorf("other engine after Load: revision %s, want %s", got, candidate)
	}

	// The candidate edited on disk: it is not what was shadowed, so it is not promoted.
	if err := os.WriteFile(filepath.Join(cand, "more.rego"), []byte("package moltgate.custom\n\nscopes := []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := revs.Promote(ctx, ""); !errors.Is(err, ErrRevisionMismatch) {
		t.Fatalf("promote of an edited candidate: got %v, want ErrRevisionMismatch", err)
	}

	st, err = revs.Rollback(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Live != configured || st.Promoted || st.Previous != "" {
		t.Fatalf("after rollback: got %+v, want the configured set %s live, nothing before it", st, configured)
	}
	if !allowed() {
		t.Fatal("after rollback: /retired refused, want the configured set's allow")
	}
	if _, err := NewRevisions(other, kv).Load(ctx); err != nil || other.Revision() != configured {
		t.Errorf("other engine after rollback: revision %s (%v), want %s", other.Revision(), err, configured)
	}
}
