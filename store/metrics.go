package store

import "github.com/prometheus/client_golang/prometheus"

var (
	timeoutsDesc = prometheus.NewDesc("moltgate_store_operation_timeouts_total",
		"Store operations that missed their deadline, by operation.", []string{"op"}, nil)
	stuckDesc = prometheus.NewDesc("moltgate_store_stuck_operations",
		"Store operations running longer than the store timeout now.", nil, nil)
)

// Collector returns the store's metrics, read at each scrape.
func (b *Bolt) Collector() prometheus.Collector { return b.g }

// Collector returns the store's metrics, read at each scrape.
func (r *Redis) Collector() prometheus.Collector { return r.g }

// Describe implements prometheus.Collector.
func (g *guard) Describe(ch chan<- *prometheus.Desc) {
	ch <- timeoutsDesc
	ch <- stuckDesc
}

// Collect implements prometheus.Collector.
func (g *guard) Collect(ch chan<- prometheus.Metric) {
	for op, name := range ops {
		ch <- prometheus.MustNewConstMetric(timeoutsDesc, prometheus.CounterValue, float64(g.timeouts[op].Load()), name)
	}
	n, _ := g.overdue()
	ch <- prometheus.MustNewConstMetric(stuckDesc, prometheus.GaugeValue, float64(n))
}
