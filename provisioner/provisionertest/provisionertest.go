// Package provisionertest helps test the provisioner and its drivers the way issue 14 asks:
// kill a pass at any moment of any step (Config.KillAt), resume it with another provisioner
// on the same store, and check that the world ends with exactly one of each resource.
package provisionertest

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner"
	"github.com/moltgate/moltgate/registry"
	"github.com/moltgate/moltgate/store"
)

// Moments are the moments of a step at which Config.KillAt can end a pass: its pending
// record written, its call returned (its resource made, its end not recorded), its end
// recorded.
var Moments = []string{"pending recorded", "acted", "done recorded"}

// ErrKilled is what a KillSwitch makes KillAt return; a killed pass's error wraps it.
var ErrKilled = errors.New("provisionertest: killed")

// EachKillMoment runs f as a parallel subtest for each moment of each step of plan.
func EachKillMoment(t *testing.T, plan []string, f func(t *testing.T, step, moment string)) {
	t.Helper()
	for _, step := range plan {
		for _, moment := range Moments {
			t.Run(step+"/"+moment, func(t *testing.T) {
				t.Parallel()
				f(t, step, moment)
			})
		}
	}
}

// KillSwitch kills one pass at one point ("ensure local.process: acted"), once armed, once.
// Its zero value is disarmed; give KillAt to Config.KillAt.
type KillSwitch struct{ point atomic.Pointer[string] }

// Arm makes the next pass that reaches point end there.
func (k *KillSwitch) Arm(point string) { k.point.Store(&point) }

// KillAt is a Config.KillAt.
func (k *KillSwitch) KillAt(point string) error {
	if p := k.point.Load(); p != nil && *p == point && k.point.CompareAndSwap(p, nil) {
		return ErrKilled
	}
	return nil
}

// KillAndResume is the crash test of issue 14 on gateway id: dead's pass dies at point
// (armed on k), as if its process had been killed; next's pass is then held off by the dead
// holder's lease until clock passes it (ttl), and afterwards converges the gateway.
func KillAndResume(t testing.TB, k *KillSwitch, point string, dead, next *provisioner.Provisioner, clock *testenv.Clock,
	ttl time.Duration, id string) {
	t.Helper()
	k.Arm(point)
	if err := dead.Reconcile(t.Context(), id); !errors.Is(err, ErrKilled) {
		t.Fatalf("first pass: got %v, want the crash at %q", err, point)
	}
	if err := next.Reconcile(t.Context(), id); !errors.Is(err, provisioner.ErrLeaseHeld) {
		t.Fatalf("pass while the dead holder's lease runs: got %v, want ErrLeaseHeld", err)
	}
	clock.Advance(ttl + time.Second)
	Converge(t, next, id)
}

// Converge runs passes over gateway id until one ends well, failing the test after ten.
func Converge(t testing.TB, p *provisioner.Provisioner, id string) {
	t.Helper()
	var err error
	for range 10 {
		if err = p.Reconcile(t.Context(), id); err == nil {
			return
		}
	}
	t.Fatalf("no good pass over %s in 10: last error %v", id, err)
}

// Provisioned applies s and converges it.
func Provisioned(t testing.TB, p *provisioner.Provisioner, s provisioner.Spec) {
	t.Helper()
	if _, _, err := p.Apply(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	Converge(t, p, s.ID)
}

// Audit is an audit sink that keeps the events, for Deps.Audit.
type Audit struct {
	mu     sync.Mutex
	events []audit.Event
}

// Emit keeps e.
func (a *Audit) Emit(_ context.Context, e audit.Event) error {
	a.mu.Lock()
	a.events = append(a.events, e)
	a.mu.Unlock()
	return nil
}

// Events returns the events kept so far.
func (a *Audit) Events() []audit.Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]audit.Event(nil), a.events...)
}

// NopSyncer is a registry syncer that syncs nothing (one process, no policy engine).
type NopSyncer struct{}

// PutGateway does nothing.
func (NopSyncer) PutGateway(context.Context, registry.Gateway) error { return nil }

// DeleteGateway does nothing.
func (NopSyncer) DeleteGateway(context.Context, string) error { return nil }

// Stores are what the provisioners ("processes") of one test share: a bbolt store in a
// temporary folder, a keystore with a fixed master key, and a registry on them.
type Stores struct {
	KV       *store.Bolt
	Keystore *keystore.Keystore
	Registry *registry.Registry
}

// NewStores opens Stores, closed when the test ends.
func NewStores(t testing.TB) Stores {
	t.Helper()
	kv, err := store.OpenBolt(filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })
	ring, err := keystore.NewKeyring(1, bytes.Repeat([]byte{7}, keystore.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	ks := keystore.New(ring)
	reg, err := registry.New(t.Context(), kv, ks, NopSyncer{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return Stores{KV: kv, Keystore: ks, Registry: reg}
}
