package policies

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the engine's Prometheus collectors. Label values are bounded.
type metrics struct {
	duration prometheus.Histogram
	errors   prometheus.Counter
	allow    prometheus.Counter
	deny     prometheus.Counter
	canceled prometheus.Counter // the caller left before the decision: neither a decision nor an error
	reloaded prometheus.Counter // a candidate set went live
	refused  prometheus.Counter // a candidate set was refused; the old one stays
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	duration := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "moltgate_policy_evaluation_duration_seconds",
		Help: "Time to evaluate one policy decision.",
		// 5µs to 250ms: a decision is expected in tens of microseconds; 250ms is the default limit.
		Buckets: []float64{5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 5e-3, 10e-3, 50e-3, 250e-3},
	})
	errs := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "moltgate_policy_errors_total",
		Help: "Decisions that failed (evaluation error, timeout, undefined or malformed result) and were denied.",
	})
	decisions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "moltgate_policy_decisions_total",
		Help: "Policy decisions by outcome: allow, deny, or canceled (the caller went away first; no decision).",
	}, []string{"decision"})
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "moltgate_policy_reloads_total",
		Help: "Candidate policy sets by result: live (it went live) or refused (it failed to load, type-check or pass its tests; the old set stays).",
	}, []string{"result"})
	if reg != nil {
		for _, c := range []prometheus.Collector{duration, errs, decisions, reloads} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("policies: register metrics: %w", err)
			}
		}
	}
	return &metrics{
		duration: duration,
		errors:   errs,
		allow:    decisions.WithLabelValues("allow"),
		deny:     decisions.WithLabelValues("deny"),
		canceled: decisions.WithLabelValues("canceled"),
		reloaded: reloads.WithLabelValues("live"),
		refused:  reloads.WithLabelValues("refused"),
	}, nil
}
