package proxy_test

import (
	"testing"
	"time"

	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/registry"
)

// Issue 12: a refused WebSocket message's error names its decision (details.decision_id),
// a reused decision included, and the refusal's audit event carries that id and the
// policy revision.
func TestWSRefusalCarriesDecisionID(t *testing.T) {
	f := newWSFixture(t, registry.AuthToken)
	c := f.connected(t, f.user("user_operator"))
	var ids []string
	for _, method := range []string{"config.get", "config.get", "sessions.delete"} {
		res := c.call(method, map[string]any{})
		errObj, _ := res["error"].(map[string]any)
		details, _ := errObj["details"].(map[string]any)
		id, _ := details["decision_id"].(string)
		if res["ok"] != false || len(id) != 32 {
			t.Fatalf("%s as operator: %v, want a refusal with details.decision_id", method, res)
		}
		for _, seen := range ids {
			if seen == id {
				t.Fatalf("decision id %s given twice", id)
			}
		}
		ids = append(ids, id)
	}
	testenv.WaitUntil(t, "the refusals on record", 10*time.Second, func() bool {
		found := 0
		for _, e := range f.events(t) {
			if e.Decision == nil {
				continue
			}
			switch e.Decision.DecisionID {
			case ids[0], ids[2]: // the first of each run: the second config.get is counted into its run
				if e.PolicyRevision != f.engine.Revision() || e.Decision.Labels["revision"] != f.engine.Revision() {
					t.Fatalf("event %+v: want revision %s", e, f.engine.Revision())
				}
				found++
			}
		}
		return found == 2
	})
}
