package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the request path. Every label value is from a fixed set.
type metrics struct {
	requests     *prometheus.CounterVec   // route, decision, code
	duration     *prometheus.HistogramVec // route
	authnFailed  *prometheus.CounterVec   // reason
	upstreamErrs *prometheus.CounterVec   // kind
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moltgate_http_requests_total",
			Help: "Requests by route (gateway, unknown), decision (allow, deny, unauthenticated, error, canceled: the client left while its request was decided) and status class.",
		}, []string{"route", "decision", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "moltgate_http_request_duration_seconds",
			Help:    "Time from request to the end of the response, by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 60},
		}, []string{"route"}),
		authnFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moltgate_authn_failures_total",
			Help: "Refused credentials by reason code.",
		}, []string{"reason"}),
		upstreamErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moltgate_upstream_errors_total",
			Help: "Failed upstream round trips by kind (unavailable, timeout, canceled).",
		}, []string{"kind"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.authnFailed, m.upstreamErrs} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

var statusClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

func statusClass(code int) string {
	if code >= 100 && code < 600 {
		return statusClasses[code/100-1]
	}
	return "other"
}
