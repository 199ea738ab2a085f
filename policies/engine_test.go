package policies

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Issue 16: a caller whose context is cancelled (its client went away) gets no decision,
// but that is not a policy failure: it is counted as a cancelled decision, never in
// moltgate_policy_errors_total, which fires the policy-error alert. A deadline that passes
// is still a timeout, and a policy error. Both fail closed.
func TestDecideWhenTheCallerLeaves(t *testing.T) {
	expired, cancelExpired := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancelExpired()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name                  string
		ctx                   context.Context
		kind                  string
		isCanceled, isTimeout bool
		errors, canceled      float64
	}{
		{"cancelled", cancelled, FailCanceled, true, false, 0, 1},
		{"deadline passed", expired, FailTimeout, false, true, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			e, err := New(t.Context(), Config{}, nil, reg)
			if err != nil {
				t.Fatal(err)
			}
			d, err := e.Decide(tt.ctx, &Input{Action: "http.read", Protocol: ProtocolHTTP})
			var de *DecisionError
			if !errors.As(err, &de) || de.Kind != tt.kind {
				t.Fatalf("got %v, want a DecisionError of kind %s", err, tt.kind)
			}
			if d.Allow || !errors.Is(err, ErrPolicy) {
				t.Fatalf("got %+v, %v: want a refusal (fail closed)", d, err)
			}
			if got := errors.Is(err, context.Canceled); got != tt.isCanceled {
				t.Errorf("errors.Is(err, context.Canceled): got %v, want %v", got, tt.isCanceled)
			}
			if got := errors.Is(err, ErrTimeout); got != tt.isTimeout {
				t.Errorf("errors.Is(err, ErrTimeout): got %v, want %v", got, tt.isTimeout)
			}
			if got := testutil.ToFloat64(e.metrics.errors); got != tt.errors {
				t.Errorf("moltgate_policy_errors_total: got %v, want %v", got, tt.errors)
			}
			if got := testutil.ToFloat64(e.metrics.canceled); got != tt.canceled {
				t.Errorf(`moltgate_policy_decisions_total{decision="canceled"}: got %v, want %v`, got, tt.canceled)
			}
			if got := testutil.ToFloat64(e.metrics.deny); got != tt.errors {
				t.Errorf(`moltgate_policy_decisions_total{decision="deny"}: got %v, want %v`, got, tt.errors)
			}
		})
	}
}
