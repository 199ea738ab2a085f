package proxy

import (
	"net/http"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/policies"
)

// DecisionIDHeader carries the id of the decision behind a response: the policy decision
// that let a request through or refused it, or the one moltgate made itself (bad path,
// authentication, ...). Support finds the decision and its audit event by it.
const DecisionIDHeader = "X-Moltgate-Decision-Id"

// DecisionID returns the id of the decision w answers, set on w (DecisionIDHeader) by the
// policy decision; a refusal made before the policy was asked gets one of its own.
func DecisionID(w http.ResponseWriter) string {
	h := w.Header()
	if v := h[DecisionIDHeader]; len(v) > 0 {
		return v[0]
	}
	id := policies.NewDecisionID()
	h[DecisionIDHeader] = []string{id}
	return id
}

// withDecisionID returns ev naming the decision w answers, for the decision log (and
// whether the policy's decision was reused, when ev.Decision says so).
func withDecisionID(w http.ResponseWriter, ev audit.Event) audit.Event {
	d := audit.Decision{DecisionID: DecisionID(w)}
	if ev.Decision != nil {
		d.Reused = ev.Decision.Reused
	}
	ev.Decision = &d
	return ev
}
