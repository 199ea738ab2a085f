package policies

import (
	"errors"
	"fmt"
	"strings"
)

// unprefixed is an error of this package wrapped by another of its errors: it reads without
// its own "policies: " prefix, so that the message says it once ("policies: shadow:
// compile: ..."), and unwraps to the error itself.
type unprefixed struct{ err error }

func (u unprefixed) Error() string { return strings.TrimPrefix(u.err.Error(), "policies: ") }

func (u unprefixed) Unwrap() error { return u.err }

// ErrPolicy matches (errors.Is) every error Engine.Decide returns: the policy could not
// produce a valid decision, and the returned Decision is the fail-closed PolicyErrorDecision.
var ErrPolicy = errors.New("policy error")

// ErrTimeout matches the Decide errors caused by the per-decision time limit
// (Config.Timeout) or the caller's deadline. Such errors also match ErrPolicy. A caller
// whose context was cancelled gets a FailCanceled error instead, which matches
// context.Canceled: the caller left, the policy did not fail.
var ErrTimeout = errors.New("policy evaluation timed out")

// ErrStale matches the Decide errors of an engine whose data is not known to be current
// (Config.Fresh): a replica that cannot vouch for its view refuses rather than guess. Such
// errors also match ErrPolicy.
var ErrStale = errors.New("policy data not confirmed current")

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
	FailStale     = "stale"     // the data is not known to be current (Config.Fresh)
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

// Is reports whether target is ErrPolicy, ErrTimeout for a timeout, or ErrStale for stale data.
func (e *DecisionError) Is(target error) bool {
	return target == ErrPolicy || (target == ErrTimeout && e.Kind == FailTimeout) || (target == ErrStale && e.Kind == FailStale)
}

// FailReason is the stable refusal reason of an error of Decide: view_stale for stale data
// (the replica cannot vouch for its view), policy_error for anything else.
func FailReason(err error) string {
	if errors.Is(err, ErrStale) {
		return "view_stale"
	}
	return "policy_error"
}

// PolicyErrorDecision is the decision Decide returns with every error: deny, 503.
func PolicyErrorDecision() Decision {
	return Decision{Allow: false, Reason: "policy_error", Status: 503}
}
