package audit

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Outcomes of events: what became of the action an event records.
const (
	OutcomeAllow   = "allow"   // admin.request: allowed, and about to be made
	OutcomeDeny    = "deny"    // refused
	OutcomeSuccess = "success" // done
	OutcomeError   = "error"   // failed inside moltgate (a store, the keystore, the audit read)
)

// typeOutcomes is the schema of each event type's outcome, as the README's event table gives
// it. Its keys are the known types, which also bound the metric label of events by type.
var typeOutcomes = map[string][]string{
	TypeAuthnFailure:    {OutcomeDeny},
	TypePolicyDeny:      {OutcomeDeny},
	TypeAdminRequest:    {OutcomeAllow},
	TypeAdminChange:     {OutcomeSuccess, OutcomeError},
	TypeAdminDeny:       {OutcomeDeny},
	TypeAdminProbe:      {OutcomeDeny},
	TypeProxyProbe:      {OutcomeDeny},
	TypeAuditRead:       {OutcomeSuccess, OutcomeError},
	TypeCheckpoint:      {OutcomeSuccess},
	TypeRetentionDelete: {OutcomeSuccess},
	TypeSecretOpen:      {OutcomeSuccess, OutcomeDeny, OutcomeError},
	TypeSessionStart:    {OutcomeSuccess},
	TypeProvisionStep:   {OutcomeSuccess, OutcomeError},
	TypePolicyReload:    {OutcomeSuccess, OutcomeDeny},
	TypePolicyDecision:  {OutcomeAllow},
	TypePolicyShadow:    {OutcomeAllow, OutcomeDeny},
	TypePolicyPromote:   {OutcomeSuccess, OutcomeDeny, OutcomeError},
	TypePolicyRollback:  {OutcomeSuccess, OutcomeDeny, OutcomeError},
}

// Outcomes returns the outcomes an event of type typ may carry, nil for an unknown type.
func Outcomes(typ string) []string { return slices.Clone(typeOutcomes[typ]) }

// actorKinds are the kinds of Actor: the policy's subject kinds, and moltgate itself.
var actorKinds = []string{"anonymous", "user", "gateway_token", "api_token", "admin_token", "system"}

// CheckSchema returns every way a written event departs from the schema (version 2), nil
// when it fits: a known type, an outcome its type takes, an actor kind, the fields Emit sets,
// and the OPA decision fields exactly on decision events. Tests hold every event a real
// action produces to it.
func CheckSchema(e Event) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("audit: schema: "+format, args...)) }
	if e.Schema != Schema {
		bad("schema %d: want %d", e.Schema, Schema)
	}
	if outcomes, ok := typeOutcomes[e.Type]; !ok {
		bad("type %q: not an event type", e.Type)
	} else if !slices.Contains(outcomes, e.Outcome) {
		bad("%s: outcome %q: want %s", e.Type, e.Outcome, strings.Join(outcomes, " or "))
	}
	if !slices.Contains(actorKinds, e.Actor.Kind) {
		bad("%s: actor kind %q: want one of %s", e.Type, e.Actor.Kind, strings.Join(actorKinds, ", "))
	}
	if len(e.ID) != 26 || e.Seq == 0 || e.Time.IsZero() || len(e.Hash) != 64 || len(e.Prev) != 64 {
		bad("%s: id, seq, time, prev or hash not set as Emit sets them", e.Type)
	}
	if decision := isDecision(e.Type); decision != (e.Decision != nil) {
		bad("%s: decision fields present: %t, want %t", e.Type, e.Decision != nil, decision)
	}
	return errors.Join(errs...)
}
