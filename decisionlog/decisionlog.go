// Package decisionlog keeps the decision log of allows: a sample of the policy decisions
// that allowed, written to the audit stream as policy.decision events in OPA's
// decision-log shape (decision_id, path, input, result, timestamp, labels, erased).
// Refusals need no sample: every one is already an audit event with the same fields
// (policy.deny, admin.deny, authn.failure), summarised where a client repeats itself.
//
// Invariant: no credential is written. The policy input never holds one by construction;
// what a client controls and could smuggle one in (a path, a tool name, a config write's
// channels section) is erased before writing, and the erased fields are listed in the event.
package decisionlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/policies"
)

// DefaultAllowSampleRate is the share of allowed decisions logged when none is configured.
const DefaultAllowSampleRate = 0.01

// Config configures a Log.
type Config struct {
	// AllowSampleRate is the share of allowed decisions written, from 0 (none) to 1 (all).
	// Callers apply DefaultAllowSampleRate themselves: zero here means none.
	AllowSampleRate float64
}

// Auditor records audit events.
type Auditor interface {
	Emit(ctx context.Context, e audit.Event) error
}

// Log is the policy engine with a decision log of allows: Decide decides as the engine does
// and writes a sample of the allows. It serves wherever the engine does.
type Log struct {
	*policies.Engine
	rate    float64
	audit   Auditor
	logger  *slog.Logger
	allows  *prometheus.CounterVec
	logged  prometheus.Counter
	skipped prometheus.Counter
	failed  prometheus.Counter
}

// New returns engine with a decision log of allows written to aud, its metrics registered
// on reg (nil: not registered).
func New(cfg Config, engine *policies.Engine, aud Auditor, logger *slog.Logger, reg prometheus.Registerer) (*Log, error) {
	if engine == nil || aud == nil {
		return nil, errors.New("decisionlog: engine and auditor are required")
	}
	if !(cfg.AllowSampleRate >= 0 && cfg.AllowSampleRate <= 1) {
		return nil, fmt.Errorf("decisionlog: allow sample rate %v: want 0 to 1", cfg.AllowSampleRate)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l := &Log{Engine: engine, rate: cfg.AllowSampleRate, audit: aud, logger: logger,
		allows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moltgate_policy_decision_log_allows_total",
			Help: "Allowed policy decisions by what the decision log did with them: logged, sampled_out, failed (the audit stream refused the event).",
		}, []string{"result"})}
	l.logged, l.skipped, l.failed = l.allows.WithLabelValues("logged"), l.allows.WithLabelValues("sampled_out"), l.allows.WithLabelValues("failed")
	if reg != nil {
		if err := reg.Register(l.allows); err != nil {
			return nil, fmt.Errorf("decisionlog: metrics: %w", err)
		}
	}
	return l, nil
}

// Decide decides in with the engine and, for a sampled allow, writes its policy.decision
// event. The decision stands whatever becomes of the event: a sample that cannot be written
// is counted and logged, and refuses nothing.
func (l *Log) Decide(ctx context.Context, in *policies.Input) (policies.Decision, error) {
	d, err := l.Engine.Decide(ctx, in)
	if err != nil || !d.Allow {
		return d, err
	}
	if l.rate == 0 || (l.rate < 1 && rand.Float64() >= l.rate) {
		l.skipped.Inc()
		return d, nil
	}
	if err := l.audit.Emit(context.WithoutCancel(ctx), Event(in, d)); err != nil {
		l.failed.Inc()
		l.logger.LogAttrs(ctx, slog.LevelWarn, "decisionlog: event not written",
			slog.String("decision_id", d.ID), slog.Any("err", err))
		return d, nil
	}
	l.logged.Inc()
	return d, nil
}

// Event is the policy.decision audit event of allowed decision d on in, its input masked.
func Event(in *policies.Input, d policies.Decision) audit.Event {
	input, erased := Mask(in)
	return audit.Event{Type: audit.TypePolicyDecision, Actor: audit.Actor{Kind: in.Subject.Kind, ID: in.Subject.ID},
		Tenant: in.Gateway.Tenant, Gateway: in.Gateway.ID, Action: in.Action, Outcome: audit.OutcomeAllow,
		Reason: d.Reason, ClientIP: in.ClientIP, PolicyRevision: d.Revision,
		Details:  map[string]string{"protocol": in.Protocol},
		Decision: &audit.Decision{DecisionID: d.ID, Input: input, Erased: erased, Reused: d.Reused}}
}

// Mask returns in as JSON for the decision log, masked as policies.MaskInput masks it, and
// the fields erased from it, as OPA's mask paths.
func Mask(in *policies.Input) (json.RawMessage, []string) {
	raw, err := json.Marshal(in)
	var doc map[string]any
	if err == nil {
		err = json.Unmarshal(raw, &doc)
	}
	if err != nil { // an Input always encodes; if it ever did not, nothing of it is written
		return json.RawMessage(`{}`), []string{"/input"}
	}
	masked, erased := policies.MaskInput(doc)
	out, _ := json.Marshal(masked) // decoded JSON re-encodes
	return out, erased
}
