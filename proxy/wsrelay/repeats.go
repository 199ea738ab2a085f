package wsrelay

import (
	"strconv"
	"sync"
	"time"

	"github.com/moltgate/moltgate/audit"
)

// A socket's repeated refusals are recorded, but summarised. A client that calls a method it
// may not call again and again (the Control UI retries a refused config.get many times a
// second while its settings page is open; a hostile client does it on purpose) must not turn
// each message into an audit event: 32 sockets at 50 messages a second would be 1,600
// events a second from one user. The first refusal of a method for a reason is recorded at
// once; then at most one event per refusalSummaryEvery, counting in details.repeats the
// refusals it stands for; what is left is recorded when the socket ends. Every refusal is
// answered, counted in metrics, and accounted for in the audit trail.

// refusalSummaryEvery is the least time between two events of one run of refusals.
const refusalSummaryEvery = 10 * time.Second

// maxRefusalRuns bounds the runs one socket tracks; past it, further methods are counted
// together (method "*").
const maxRefusalRuns = 64

type refusalKey struct{ method, reason string }

type refusalRun struct {
	last    time.Time // the run's last event
	pending int       // refusals since then, not yet in an event
}

type refusals struct {
	mu   sync.Mutex
	runs map[refusalKey]*refusalRun
}

// note counts a refusal of method for reason at now, and says how many refusals an event
// recorded now must stand for: 0 when none is due.
func (r *refusals) note(method, reason string, now time.Time) (key refusalKey, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.runs == nil {
		r.runs = map[refusalKey]*refusalRun{}
	}
	key = refusalKey{method, reason}
	run, ok := r.runs[key]
	if !ok && len(r.runs) >= maxRefusalRuns {
		key = refusalKey{"*", reason}
		run, ok = r.runs[key]
	}
	if !ok {
		r.runs[key] = &refusalRun{last: now}
		return key, 1
	}
	run.pending++
	if now.Sub(run.last) < refusalSummaryEvery {
		return key, 0
	}
	n, run.pending, run.last = run.pending, 0, now
	return key, n
}

// rest takes the counts not yet recorded, run by run.
func (r *refusals) rest() map[refusalKey]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[refusalKey]int{}
	for k, run := range r.runs {
		if run.pending > 0 {
			out[k] = run.pending
			run.pending = 0
		}
	}
	return out
}

// auditRefusal records a refusal of method for reason, or counts it into its run's next
// event. It fails when an event was due and could not be recorded, or, for a refusal only
// counted, when the audit trail cannot take events now: no refusal goes on off the record.
func (c *conn) auditRefusal(reason, method, decisionID string) error {
	key, n := c.refused.note(method, reason, c.rl.deps.Now())
	if n > 0 {
		return c.auditRun(key, n, decisionID)
	}
	if r, ok := c.rl.deps.Audit.(interface{ Ready() error }); ok {
		return r.Ready()
	}
	return nil
}

// auditRun records n refusals of one run in one event (details.repeats when more than one),
// named by the decision id of the refusal that made it due (empty: the event's own id).
func (c *conn) auditRun(key refusalKey, n int, decisionID string) error {
	extra := map[string]string(nil)
	if n > 1 {
		extra = map[string]string{"repeats": strconv.Itoa(n)}
	}
	return c.auditDecision(audit.TypePolicyDeny, key.reason, key.method, decisionID, extra)
}

// flushRefusals records what the socket's runs of refusals counted but did not record yet.
func (c *conn) flushRefusals() {
	for k, n := range c.refused.rest() {
		c.auditRun(k, n, "")
	}
}
