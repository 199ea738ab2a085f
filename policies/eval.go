package policies

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/lineage"
)

// Explain modes of Engine.Evaluate, as `opa eval --explain` names them.
const (
	ExplainOff   = "off"   // the decision alone
	ExplainNotes = "notes" // the trace's notes (trace() calls in the policies)
	ExplainFails = "fails" // the expressions that failed
	ExplainFull  = "full"  // every step of the evaluation
)

// ExplainModes are the accepted explain modes, in the order usage lines list them.
var ExplainModes = []string{ExplainOff, ExplainNotes, ExplainFails, ExplainFull}

// Evaluation is one decision made to be looked at (moltgate policy eval, the admin API's
// policy eval): the decision, why it failed closed if it did, and OPA's explanation.
type Evaluation struct {
	Decision
	// Error is why the policy failed closed (the decision is then policy_error); empty
	// otherwise.
	Error string `json:"error,omitempty"`
	// Explanation is OPA's trace of the evaluation as `opa eval --explain` prints it, one
	// line per element, filtered by the explain mode; absent for ExplainOff.
	Explanation []string `json:"explanation,omitempty"`
}

// Evaluate decides in as Decide does, against the current policy set and data, and with an
// explain mode other than ExplainOff traces the evaluation. It is for people reproducing a
// decision: it is not counted in the decision metrics. A policy failure is reported in the
// Evaluation (fail closed, with Error), not as an error; the error is for a bad explain mode.
func (e *Engine) Evaluate(ctx context.Context, in *Input, explain string) (Evaluation, error) {
	var buf *topdown.BufferTracer
	var opts []rego.EvalOption
	switch explain {
	case ExplainOff, "":
	case ExplainNotes, ExplainFails, ExplainFull:
		buf = topdown.NewBufferTracer()
		opts = append(opts, rego.EvalQueryTracer(buf))
	default:
		return Evaluation{}, fmt.Errorf("policies: explain %q: want one of %s", explain, strings.Join(ExplainModes, ", "))
	}
	d, err := e.decide(ctx, in, opts...)
	var ev Evaluation
	if err != nil {
		d = PolicyErrorDecision()
		d.Revision = e.Revision()
		ev.Error = err.Error()
	}
	d.ID = NewDecisionID()
	ev.Decision = d
	if buf != nil {
		ev.Explanation = explanation(*buf, explain)
	}
	return ev, nil
}

// explanation renders trace as `opa eval --explain=mode` does, one line per element.
func explanation(trace []*topdown.Event, mode string) []string {
	switch mode {
	case ExplainNotes:
		trace = lineage.Notes(trace)
	case ExplainFails:
		trace = lineage.Fails(trace)
	default:
		trace = lineage.Full(trace)
	}
	var b strings.Builder
	topdown.PrettyTraceWithLocation(&b, trace)
	return slices.DeleteFunc(strings.Split(b.String(), "\n"), func(s string) bool { return s == "" })
}

// MaxInputBytes bounds a policy input read by DecodeInput.
const MaxInputBytes = 1 << 20

// DecodeInput reads one policy input (the JSON of Input, as policies see it) from r,
// strictly: unknown fields, trailing data, a missing protocol or action, or an unknown
// protocol or subject kind are errors that name the field. At most MaxInputBytes are read.
func DecodeInput(r io.Reader) (*Input, error) {
	body, err := io.ReadAll(io.LimitReader(r, MaxInputBytes+1))
	if err != nil {
		return nil, fmt.Errorf("policies: input: %w", err)
	}
	if len(body) > MaxInputBytes {
		return nil, fmt.Errorf("policies: input: larger than %d bytes", MaxInputBytes)
	}
	var in Input
	if err := decodeStrict(body, &in); err != nil {
		return nil, fmt.Errorf("policies: input: %w", err)
	}
	if err := in.Validate(); err != nil {
		return nil, fmt.Errorf("policies: input: %w", err)
	}
	return &in, nil
}

// Validate reports every way in is not an input moltgate could build, each naming its field:
// a protocol other than http, ws or admin, an empty action, an unknown subject kind.
func (in *Input) Validate() error {
	var errs []error
	if !slices.Contains([]string{ProtocolHTTP, ProtocolWS, ProtocolAdmin}, in.Protocol) {
		errs = append(errs, fmt.Errorf("protocol: %q: want http, ws or admin", in.Protocol))
	}
	if in.Action == "" {
		errs = append(errs, errors.New("action: empty"))
	}
	if !slices.Contains([]string{SubjectAnonymous, SubjectUser, SubjectGatewayToken, SubjectAPIToken, SubjectAdminToken}, in.Subject.Kind) {
		errs = append(errs, fmt.Errorf("subject.kind: %q: want anonymous, user, gateway_token, api_token or admin_token", in.Subject.Kind))
	}
	return errors.Join(errs...)
}

// decodeStrict decodes exactly one JSON value of body into v; unknown fields are errors.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}
