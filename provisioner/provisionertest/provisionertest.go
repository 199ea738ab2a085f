// Package provisionertest helps test the provisioner and its drivers the way issue 14 asks:
// kill a pass at any moment of any step (Config.KillAt), resume it with another provisioner
// on the same store, and check that the world ends with exactly one of each resource.
package provisionertest

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/moltgate/moltgate/provisioner"
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
