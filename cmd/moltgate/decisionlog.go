package main

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moltgate/moltgate/decisionlog"
	"github.com/moltgate/moltgate/policies"
)

// DecisionLogConfig configures the decision log of allows (policies.decision_log).
type DecisionLogConfig struct {
	// AllowSampleRate is the share of allowed proxy requests and WebSocket messages whose
	// decision is written to the audit stream as a policy.decision event, 0 to 1; 0 writes
	// none. Unset: 0.01. Refusals are all on
	// record (policy.deny, admin.deny, authn.failure) whatever it is.
	AllowSampleRate *float64 `yaml:"allow_sample_rate"`
}

// rate is the configured allow sample rate, or the default.
func (c DecisionLogConfig) rate() float64 {
	if c.AllowSampleRate == nil {
		return decisionlog.DefaultAllowSampleRate
	}
	return *c.AllowSampleRate
}

// open returns engine with the decision log of allows, writing to auditLog.
func (c DecisionLogConfig) open(engine *policies.Engine, auditLog decisionlog.Auditor, logger *slog.Logger, reg prometheus.Registerer) (*decisionlog.Log, error) {
	return decisionlog.New(decisionlog.Config{AllowSampleRate: c.rate()}, engine, auditLog, logger, reg)
}
