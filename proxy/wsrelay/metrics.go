package wsrelay

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	open     prometheus.Gauge
	messages *prometheus.CounterVec // direction, decision
	closes   *prometheus.CounterVec // reason
	relay    prometheus.Histogram
	cache    *prometheus.CounterVec // result: hit, miss

	// Children bound once for the per-message counts, so a message costs no label lookup.
	cacheHit, cacheMiss, gatewayMessages       prometheus.Counter
	clientAllowed, clientDenied, clientErrored prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moltgate_ws_connections",
			Help: "WebSocket connections being relayed, or answered by the relay until they identify.",
		}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moltgate_ws_messages_total",
			Help: "WebSocket messages by direction (client, gateway) and decision (allow, deny, error, none for gateway messages).",
		}, []string{"direction", "decision"}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moltgate_ws_closes_total",
			Help: "WebSocket connections ended, by reason.",
		}, []string{"reason"}),
		relay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "moltgate_ws_relay_duration_seconds",
			Help:    "From a client message read to its decision made and the message written to the gateway (or refused).",
			Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .05},
		}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moltgate_ws_decision_cache_total",
			Help: "Client message decisions by whether the socket's decision cache had it (hit) or the policy engine was asked (miss).",
		}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.open, m.messages, m.closes, m.relay, m.cache} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.cacheHit, m.cacheMiss = m.cache.WithLabelValues("hit"), m.cache.WithLabelValues("miss")
	m.gatewayMessages = m.messages.WithLabelValues("gateway", "none")
	m.clientAllowed = m.messages.WithLabelValues("client", "allow")
	m.clientDenied = m.messages.WithLabelValues("client", "deny")
	m.clientErrored = m.messages.WithLabelValues("client", "error")
	return m, nil
}
