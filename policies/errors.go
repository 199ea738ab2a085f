package policies

import (
	"errors"
	"fmt"
)

// ErrPolicy matches (errors.Is) every error Engine.Decide returns: the policy could not
// produce a valid decision, and the returned Decision is the fail-closed PolicyErrorDecision.
var ErrPolicy = errors.New("policy error")

// ErrTimeout matches the Decide errors caused by the per-decision time limit
// (Config.Timeout) or the caller's deadline. Such errors also match ErrPolicy. A caller
// whose context was cancelled gets a FailCanceled error instead, which matches
// context.Canceled: the caller left, the policy did not fail.
var ErrTimeout = errors.New("policy evaluation timed out")

// ErrNoDecisionRule is returned by New and Reload for a policy set that defines no
// data.moltgate.authz.decision rule.
var ErrNoDecisionRule = errors.New("no rule data.moltgate.authz.decision")

// Failure kinds of a DecisionError.
const (
	FailInput     = "input"     // the input could not be built
	FailEval      = "eval"      // OPA returned an evaluation error (conflict, halt, ...)
	FailTimeout   = "timeout"   // the time limit or the caller's deadline ended evaluation
	FailCanceled  = "canceled"  // the caller's context was cancelled (its client went away): no decision, and no policy failure
	FailUndefined = "undefined" // data.moltgate.authz.decision was undefined
	FailResult    = "result"    // the result was not a valid decision object
)

// DecisionError is the error Engine.Decide returns when the policy could not produce a
// decision. It matches ErrPolicy, and ErrTimeout when Kind is FailTimeout.
type DecisionError struct {
	// Kind is one of the Fail* constants; bounded, so it is safe as a metric label.
	Kind string
	// Err is the underlying cause, if any.
	Err error
}

func (e *DecisionError) Error() string {
	if e.Err == nil {
		return "policies: decide: " + e.Kind
	}
	return fmt.Sprintf("policies: decide: %s: %v", e.Kind, e.Err)
}

// Unwrap returns the underlying cause.
func (e *DecisionError) Unwrap() error { return e.Err }

// Is reports whether target is ErrPolicy, or ErrTimeout for a timeout.
func (e *DecisionError) Is(target error) bool {
	return target == ErrPolicy || (target == ErrTimeout && e.Kind == FailTimeout)
}

// PolicyErrorDecision is the decision Decide returns with every error: deny, 503.
func PolicyErrorDecision() Decision {
	return Decision{Allow: false, Reason: "policy_error", Status: 503}
}
