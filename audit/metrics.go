package audit

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the audit pipeline's; labels are bounded (event type from a fixed set, sink
// name from configuration).
type metrics struct {
	events      *prometheus.CounterVec
	byType      map[string]prometheus.Counter // events' children, made once: every known type and "other"
	emitErrors  prometheus.Counter
	emitSeconds prometheus.Histogram
	spoolBytes  prometheus.Gauge
	spoolEvents prometheus.Gauge
	spoolMax    prometheus.Gauge
	spoolAlarm  prometheus.Gauge
	spoolFull   prometheus.Gauge
	sinkLag     *prometheus.GaugeVec
	sinkErrors  *prometheus.CounterVec
	checkpoints prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moltgate_audit_events_total",
			Help: "Audit events written to the spool, by type."}, []string{"type"}),
		emitErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "moltgate_audit_emit_errors_total",
			Help: "Events Emit could not write (spool full, disk error); the caller refused its request."}),
		emitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "moltgate_audit_emit_duration_seconds",
			Help:    "Time an Emit took, including the fsync wait when durable.",
			Buckets: []float64{1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1}}),
		spoolBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "moltgate_audit_spool_bytes",
			Help: "Bytes of events in the spool (not yet archived)."}),
		spoolEvents: prometheus.NewGauge(prometheus.GaugeOpts{Name: "moltgate_audit_spool_events",
			Help: "Events in the spool (not yet archived)."}),
		spoolMax: prometheus.NewGauge(prometheus.GaugeOpts{Name: "moltgate_audit_spool_max_bytes",
			Help: "The spool's bound; at it moltgate refuses requests."}),
		spoolAlarm: prometheus.NewGauge(prometheus.GaugeOpts{Name: "moltgate_audit_spool_alarm",
			Help: "1 while the spool is above 80% of its bound."}),
		spoolFull: prometheus.NewGauge(prometheus.GaugeOpts{Name: "moltgate_audit_spool_full",
			Help: "1 while the spool is full and requests are refused."}),
		sinkLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "moltgate_audit_sink_lag_events",
			Help: "Events written to the spool that a sink does not hold yet."}, []string{"sink"}),
		sinkErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moltgate_audit_sink_errors_total",
			Help: "Failed writes to a sink (the events stay in the spool and are retried)."}, []string{"sink"}),
		checkpoints: prometheus.NewCounter(prometheus.CounterOpts{Name: "moltgate_audit_checkpoints_total",
			Help: "Signed checkpoints written."}),
	}
	m.byType = map[string]prometheus.Counter{"other": m.events.WithLabelValues("other")}
	for typ := range typeOutcomes {
		m.byType[typ] = m.events.WithLabelValues(typ)
	}
	return m, register(reg, m.events, m.emitErrors, m.emitSeconds, m.spoolBytes, m.spoolEvents,
		m.spoolMax, m.spoolAlarm, m.spoolFull, m.sinkLag, m.sinkErrors, m.checkpoints)
}

// register registers cs with reg (none when reg is nil).
func register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("audit: metrics: %w", err)
		}
	}
	return nil
}

// event is the counter of events of type typ ("other" for a type not in typeOutcomes).
func (m *metrics) event(typ string) prometheus.Counter {
	if c, ok := m.byType[typ]; ok {
		return c
	}
	return m.byType["other"]
}

// ArchiveMetrics are the archive worker's and verify's.
type archiveMetrics struct {
	archived       *prometheus.CounterVec
	segments       prometheus.Counter
	verifyFailures prometheus.Counter
	deleted        prometheus.Counter
}

func newArchiveMetrics(reg prometheus.Registerer) (*archiveMetrics, error) {
	m := &archiveMetrics{
		archived: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moltgate_audit_archived_events_total",
			Help: "Events written to archive segments."}, []string{"source"}),
		segments: prometheus.NewCounter(prometheus.CounterOpts{Name: "moltgate_audit_archive_segments_total",
			Help: "Archive segments written."}),
		verifyFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "moltgate_audit_verify_failures_total",
			Help: "Events refused by the archive because their chain did not verify."}),
		deleted: prometheus.NewCounter(prometheus.CounterOpts{Name: "moltgate_audit_retention_deleted_segments_total",
			Help: "Archive segments deleted after their retention."}),
	}
	return m, register(reg, m.archived, m.segments, m.verifyFailures, m.deleted)
}
