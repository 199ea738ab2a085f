package admin

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/policies"
)

// PolicyRevisions promotes the shadowed candidate policy set and rolls back;
// policies.Revisions implements it.
type PolicyRevisions interface {
	State() (policies.RevisionState, error)
	Promote(ctx context.Context, expect string) (policies.RevisionState, error)
	Rollback(ctx context.Context) (policies.RevisionState, error)
}

var _ PolicyRevisions = (*policies.Revisions)(nil)

// PromoteRequest is the body of POST /v1/policy/promote.
type PromoteRequest struct {
	// Revision, if set, is the candidate revision the caller means to promote: another one
	// is refused (409 revision_mismatch).
	Revision string `json:"revision"`
}

// policyRoutes are the policy revision endpoints: platform admins and the admin token only
// (admin.policy.read, admin.policy.promote, admin.policy.rollback).
func (s *Server) policyRoutes() {
	if s.deps.Revisions == nil {
		return
	}
	s.mux.HandleFunc("GET /v1/policy", s.policyState)
	s.mux.HandleFunc("POST /v1/policy/promote", s.policyChange("admin.policy.promote", audit.TypePolicyPromote,
		func(r *http.Request) (policies.RevisionState, error) {
			var req PromoteRequest
			if err := decode(r, &req); err != nil {
				return policies.RevisionState{}, err
			}
			return s.deps.Revisions.Promote(r.Context(), req.Revision)
		}))
	s.mux.HandleFunc("POST /v1/policy/rollback", s.policyChange("admin.policy.rollback", audit.TypePolicyRollback,
		func(r *http.Request) (policies.RevisionState, error) { return s.deps.Revisions.Rollback(r.Context()) }))
}

func (s *Server) policyState(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authorizeFor(w, r, "admin.policy.read", "", "")
	if !ok {
		return
	}
	st, err := s.deps.Revisions.State()
	if err != nil {
		s.policyFailed(w, r, c, audit.TypeAdminChange, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// policyChange serves promote and rollback: each is audited as its own event type, with the
// revisions before and after.
func (s *Server) policyChange(action, typ string, change func(*http.Request) (policies.RevisionState, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, ok := s.authorizeFor(w, r, action, "", "")
		if !ok {
			return
		}
		c.ev.Details["from_revision"] = s.deps.Policy.Revision()
		st, err := change(r)
		if err != nil {
			s.policyFailed(w, r, c, typ, err)
			return
		}
		c.ev.Type, c.ev.Outcome, c.ev.PolicyRevision = typ, audit.OutcomeSuccess, st.Live
		c.ev.Details["revision"] = st.Live
		if !s.emit(r.Context(), c.ev) {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "done, but not audited", "reason": "audit_unavailable"})
			return
		}
		writeJSON(w, http.StatusOK, st)
	}
}

// policyFailed answers a refused promote or rollback: what the caller can act on is 409 or
// 422 with the reason, the rest an internal error.
func (s *Server) policyFailed(w http.ResponseWriter, r *http.Request, c *call, typ string, err error) {
	deny := func(status int, reason string) {
		s.answer(w, r, c, typ, audit.OutcomeDeny, status, reason, err.Error())
	}
	switch {
	case errors.Is(err, errBadBody):
		deny(http.StatusBadRequest, "invalid")
	case errors.Is(err, policies.ErrNoCandidate):
		deny(http.StatusConflict, "no_candidate")
	case errors.Is(err, policies.ErrRevisionMismatch):
		deny(http.StatusConflict, "revision_mismatch")
	case errors.Is(err, policies.ErrNoRollback):
		deny(http.StatusConflict, "no_earlier_revision")
	case errors.Is(err, policies.ErrTestsFailed), errors.Is(err, policies.ErrMissingData), errors.Is(err, policies.ErrNoDecisionRule):
		deny(http.StatusUnprocessableEntity, "policy_refused")
	default:
		s.deps.Logger.LogAttrs(r.Context(), slog.LevelError, "admin: policy revision change failed", slog.Any("err", err))
		s.answer(w, r, c, typ, audit.OutcomeError, http.StatusServiceUnavailable, "internal", "")
	}
}

// PolicyState returns the live, previous and candidate policy revisions.
func (c *Client) PolicyState(ctx context.Context) (policies.RevisionState, error) {
	var out policies.RevisionState
	return out, c.do(ctx, http.MethodGet, "/v1/policy", nil, &out)
}

// PromotePolicy makes the candidate policy set live; revision, if set, must be its revision.
func (c *Client) PromotePolicy(ctx context.Context, revision string) (policies.RevisionState, error) {
	var out policies.RevisionState
	return out, c.do(ctx, http.MethodPost, "/v1/policy/promote", PromoteRequest{Revision: revision}, &out)
}

// RollbackPolicy re-activates the policy revision that was live before the current one.
func (c *Client) RollbackPolicy(ctx context.Context) (policies.RevisionState, error) {
	var out policies.RevisionState
	return out, c.do(ctx, http.MethodPost, "/v1/policy/rollback", nil, &out)
}
