package provisioner

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the provisioner. Labels are bounded: drivers and steps are fixed by the code.
type metrics struct {
	steps          *prometheus.CounterVec
	reconcile      *prometheus.HistogramVec
	overlapRetries prometheus.Counter
	driftFound     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		steps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moltgate_provisioner_steps_total",
			Help: "Provisioning steps run (ensure or destroy), by driver, step, op and outcome (success, error).",
		}, []string{"driver", "step", "op", "outcome"}),
		reconcile: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "moltgate_provisioner_reconcile_duration_seconds",
			Help:    "Time of one reconcile pass over one gateway, by driver and result (ok, error).",
			Buckets: []float64{.001, .01, .1, .5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300},
		}, []string{"driver", "result"}),
		overlapRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moltgate_provisioner_token_overlap_retries_total",
			Help: "Requests answered 401 during a token rotation and sent again with the gateway's other token.",
		}),
		driftFound: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moltgate_provisioner_drift_found_total",
			Help: "Differences the periodic checks found between what a step made and what exists, by driver and kind (image, dns, ingress, tunnel, access, secrets, machine).",
		}, []string{"driver", "kind"}),
	}
	if reg == nil {
		reg = prometheus.NewRegistry() // not exported
	}
	for _, c := range []prometheus.Collector{m.steps, m.reconcile, m.overlapRetries, m.driftFound} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) step(driver, step, op string, err error) {
	outcome := "success"
	if err != nil {
		outcome = "error"
	}
	m.steps.WithLabelValues(driver, step, op, outcome).Inc()
}

func (m *metrics) observeReconcile(driver string, err error, d time.Duration) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.reconcile.WithLabelValues(driver, result).Observe(d.Seconds())
}

func (m *metrics) drift(driver, kind string) {
	m.driftFound.WithLabelValues(driver, kind).Inc()
}
