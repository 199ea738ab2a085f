package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/proxy/wsrelay"
)

// shadowReporter audits each decision the candidate policy set would make otherwise
// (policy.shadow_difference): the enforced decision is the event's outcome and reason, the
// candidate's is in details, with the input, its secrets erased (policies.MaskInput).
func shadowReporter(ctx context.Context, auditLog *audit.FileLog, logger *slog.Logger) func(policies.ShadowDifference) {
	return func(d policies.ShadowDifference) {
		in, _ := json.Marshal(d.Input)
		ev := audit.Event{Type: audit.TypePolicyShadow, Actor: audit.Actor{Kind: "system", ID: "policies"},
			Outcome: audit.OutcomeDeny, Reason: d.Live.Reason, PolicyRevision: d.LiveRevision,
			Details: map[string]string{
				"input":              string(in),
				"live":               decisionText(d.Live),
				"candidate":          decisionText(d.Candidate),
				"candidate_revision": d.CandidateRevision,
			}}
		if d.Live.Allow {
			ev.Outcome = audit.OutcomeAllow
		}
		if d.CandidateErr != "" {
			ev.Details["candidate_error"] = d.CandidateErr
		}
		if len(d.Erased) > 0 {
			ev.Details["erased"] = strings.Join(d.Erased, ",")
		}
		if gw, ok := d.Input["gateway"].(map[string]any); ok {
			ev.Gateway, _ = gw["id"].(string)
			ev.Tenant, _ = gw["tenant"].(string)
		}
		ev.Action, _ = d.Input["action"].(string)
		if err := auditLog.Emit(ctx, ev); err != nil {
			logger.LogAttrs(ctx, slog.LevelError, "policy shadow difference not audited", slog.Any("err", err))
		}
	}
}

// decisionText is a decision in one short line: "allow owner", "deny route_retired 410 scopes=a,b".
func decisionText(d policies.Decision) string {
	parts := []string{"deny", d.Reason}
	if d.Allow {
		parts[0] = "allow"
	}
	if d.Status != 0 {
		parts = append(parts, strconv.Itoa(d.Status))
	}
	if len(d.Scopes) > 0 {
		parts = append(parts, "scopes="+strings.Join(d.Scopes, ","))
	}
	return strings.Join(parts, " ")
}

// writeShadowStatus adds to /readyz the promoted revision and the candidate being shadowed.
func writeShadowStatus(w io.Writer, engine *policies.Engine) {
	if rev := engine.Promoted(); rev != "" {
		fmt.Fprintf(w, "policy revision %s is promoted: it overrides the configured set (policies.dir, policies.bundle or the embedded one) until rolled back\n", rev)
	}
	if rev := engine.ShadowRevision(); rev != "" {
		fmt.Fprintf(w, "policy candidate %s shadowing (%s)\n", rev, engine.ShadowDir())
	}
	if r := engine.ShadowRefusal(); r != nil {
		fmt.Fprintf(w, "policy shadow candidate refused at %s: %v\n", r.Time.UTC().Format(time.RFC3339), r.Err)
	}
}

// recheckedRevisions re-decides the open sockets once a promote or rollback is live here
// (other replicas do so when the change stream brings it).
type recheckedRevisions struct {
	*policies.Revisions
	relay *wsrelay.Relay
}

func (r recheckedRevisions) Promote(ctx context.Context, expect string) (policies.RevisionState, error) {
	return r.rechecked(ctx)(r.Revisions.Promote(ctx, expect))
}

func (r recheckedRevisions) Rollback(ctx context.Context) (policies.RevisionState, error) {
	return r.rechecked(ctx)(r.Revisions.Rollback(ctx))
}

func (r recheckedRevisions) rechecked(ctx context.Context) func(policies.RevisionState, error) (policies.RevisionState, error) {
	return func(st policies.RevisionState, err error) (policies.RevisionState, error) {
		if err == nil {
			r.relay.Recheck(context.WithoutCancel(ctx), "")
		}
		return st, err
	}
}

// addShadowReload adds to a policy.reload event's details the candidate set's side of the
// reload: its revision, and why it was refused when it was (the previous candidate shadows
// on), so a refused candidate is on record as a refused live set is.
func addShadowReload(details map[string]string, engine *policies.Engine) {
	if rev := engine.ShadowRevision(); rev != "" {
		details["candidate_revision"] = rev
	}
	if r := engine.ShadowRefusal(); r != nil {
		details["candidate_error"] = r.Err.Error()
	}
}
