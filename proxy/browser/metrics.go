package browser

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	launches *prometheus.CounterVec
	checks   *prometheus.CounterVec
	ended    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, count func() float64) (*metrics, error) {
	m := &metrics{
		launches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moltgate_browser_launches_total",
			Help: "Launch codes by result: issued, redeemed, invalid (unknown or used), expired, wrong_gateway."}, []string{"result"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moltgate_browser_clerk_checks_total",
			Help: "Checks of Clerk sessions behind browser sessions, by result: active, ended, error."}, []string{"result"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moltgate_browser_sessions_ended_total",
			Help: "Browser sessions ended, by reason: idle, lifetime, revoked, signed_out, clerk_session_ended, access_lost."}, []string{"reason"}),
	}
	gauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "moltgate_browser_sessions",
		Help: "Browser sessions this process holds."}, count)
	for _, c := range []prometheus.Collector{m.launches, m.checks, m.ended, gauge} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("browser: metrics: %w", err)
		}
	}
	return m, nil
}
