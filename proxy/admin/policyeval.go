package admin

import (
	"context"
	"net/http"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/policies"
)

// Evaluator decides a policy input for a person looking into a decision
// (policies.Engine.Evaluate).
type Evaluator interface {
	Evaluate(ctx context.Context, in *policies.Input, explain string) (policies.Evaluation, error)
}

// EvalRequest is the body of POST /v1/policy/eval.
type EvalRequest struct {
	// Input is the policy input to decide, as policies see it.
	Input policies.Input `json:"input"`
	// Explain is off (the default), notes, fails or full: OPA's explanation, filtered.
	Explain string `json:"explain,omitempty"`
}

func (s *Server) policyEvalRoutes() {
	if s.deps.Evaluator == nil {
		return
	}
	s.mux.HandleFunc("POST /v1/policy/eval", s.policyEval)
}

// policyEval serves POST /v1/policy/eval: the decision the live policy set and data give
// the input, with OPA's explanation on request (policies.Evaluation). Platform admins and
// the admin token only (admin.policy.eval): an answer shows the policies' view of any
// gateway. It decides, and changes nothing.
func (s *Server) policyEval(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authorize(w, r, "admin.policy.eval", "")
	if !ok {
		return
	}
	var req EvalRequest
	if err := decode(r, &req); err != nil {
		s.failed(w, r, c, err)
		return
	}
	if req.Explain == "" {
		req.Explain = policies.ExplainOff
	}
	if err := req.Input.Validate(); err != nil {
		s.answer(w, r, c, audit.TypeAdminDeny, "deny", http.StatusBadRequest, "invalid", "input: "+invalidMessage(err))
		return
	}
	ev, err := s.deps.Evaluator.Evaluate(r.Context(), &req.Input, req.Explain)
	if err != nil {
		s.answer(w, r, c, audit.TypeAdminDeny, "deny", http.StatusBadRequest, "invalid", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, ev)
}

// PolicyEval asks the policy set serving now for the decision on req.Input.
func (c *Client) PolicyEval(ctx context.Context, req EvalRequest) (policies.Evaluation, error) {
	var out policies.Evaluation
	return out, c.do(ctx, http.MethodPost, "/v1/policy/eval", req, &out)
}
