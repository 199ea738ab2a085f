package policies

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moltgate/moltgate/policies/bundletest"
	"github.com/moltgate/moltgate/registry"
	"github.com/moltgate/moltgate/store"
)

// Issue 12: while a revision is promoted, a bundle fetched from the bundle server does not
// decide, but it is what a rollback returns to, so it passes the gate when it is fetched: a
// refused bundle is counted and kept for /readyz, and the bundle in force before it stays
// the fallback; a bundle that passes becomes the fallback without deciding.
func TestBundleFetchedWhilePromotedIsGated(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	priv, pub, err := bundletest.KeyPair()
	if err != nil {
		t.Fatal(err)
	}
	srv := bundletest.New()
	t.Cleanup(srv.Close)
	srv.Publish(encode(t, customBundle(t, "first", "v1", ""), priv))
	kv, err := store.OpenBolt(filepath.Join(t.TempDir(), "moltgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })

	cand := writeSet(t, false, nil, map[string]string{"retire.rego": retireRoute(t)})
	e := newTestEngine(t, Config{ShadowDir: cand, Bundle: &BundleConfig{URL: srv.URL + "/bundle.tar.gz",
		PollInterval: 5 * time.Millisecond, VerificationKey: pub, Algorithm: "ES256"}}, nil)
	t.Cleanup(e.Close)
	if err := e.SetGateways(ctx, []registry.Gateway{{ID: "gw1", Owner: "u_owner", AuthMode: registry.AuthToken}}); err != nil {
		t.Fatal(err)
	}
	reason := func() string {
		t.Helper()
		d, err := e.Decide(ctx, owner("http.read"))
		if err != nil {
			t.Fatal(err)
		}
		return d.Reason
	}
	revs := NewRevisions(e, kv)
	if _, err := revs.Promote(ctx, ""); err != nil {
		t.Fatal(err)
	}
	promoted := e.Revision()
	if got := reason(); got == "first" {
		t.Fatalf("after promote: reason %q, want the promoted set's decision", got)
	}

	_, next := pollBundles(t, e)

	refusedBefore := testutil.ToFloat64(e.metrics.refused)
	srv.Publish(encode(t, customBundle(t, "untested", "v2", "package moltgate.custom_test\n\ntest_fails if false\n"), priv))
	err = next()
	if err == nil || !strings.Contains(err.Error(), "test_fails") {
		t.Fatalf("failing bundle while promoted: got %v, want a refusal naming test_fails", err)
	}
	if r := e.LastRefusal(); r == nil || r.Err != err {
		t.Errorf("last refusal %v, want %v", r, err)
	}
	if got := testutil.ToFloat64(e.metrics.refused); got != refusedBefore+1 {
		t.Errorf("refused reloads: got %v, want %v", got, refusedBefore+1)
	}
	if rev := e.BundleStatus().Revision; rev != "v1" || e.Revision() != promoted {
		t.Fatalf("after the refusal: bundle in force %q, live %s; want v1 and the promoted %s", rev, e.Revision(), promoted)
	}

	// Rolled back to: the bundle in force is the last one that passed the gate.
	if _, err := revs.Rollback(ctx); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if got := reason(); got != "first" {
		t.Fatalf("after rollback: reason %q, want first (bundle v1)", got)
	}

	// Promoted again, a bundle that passes becomes the fallback without deciding.
	if _, err := revs.Promote(ctx, ""); err != nil {
		t.Fatal(err)
	}
	srv.Publish(encode(t, customBundle(t, "second", "v3", ""), priv))
	if err := next(); err != nil {
		t.Fatalf("good bundle while promoted: %v", err)
	}
	if rev, got := e.BundleStatus().Revision, reason(); rev != "v3" || got == "second" || e.LastRefusal() != nil {
		t.Fatalf("good bundle while promoted: bundle in force %q, reason %q, refusal %v; want v3, the promoted decision, none", rev, got, e.LastRefusal())
	}
	if _, err := revs.Rollback(ctx); err != nil || reason() != "second" {
		t.Fatalf("rollback: %v, reason %q; want second (bundle v3)", err, reason())
	}
}
