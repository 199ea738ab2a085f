// Package audit records security events: authentication failures, policy denials, admin
// changes, and its own checkpoints and retention deletions. Each event carries the hash of
// its predecessor in its replica's chain, so an edited, deleted, inserted or reordered event
// breaks the chain and Verify names it; signed checkpoints in the chain anchor it to a key
// an attacker does not hold.
//
// Events flow: Emit → spool (FileLog: append-only segments, fsync batched) → sinks (Redis
// Streams, or the archive directly) → archive (gzip segments with manifests, kept for the
// retention period). The spool deletes a segment only after the archive holds every event in
// it; if the spool would overflow, Emit fails with ErrSpoolFull and Ready reports it, so the
// proxy refuses requests rather than run unaudited.
//
// Invariants: events never contain a secret (callers pass ids and reason codes, never tokens);
// an event Emit returned nil for has been written to the spool file (and fsynced, with
// FileConfig.Durable); no event leaves the spool before the archive acknowledged it.
package audit

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// Schema is the version of the event format. Version 1 events (no replica, no decision
// fields) still verify: every field added since is omitted when empty.
const Schema = 2

// Event types. Each is produced by a real action; the README lists them.
const (
	TypeAuthnFailure    = "authn.failure"          // a credential was presented and refused
	TypePolicyDeny      = "policy.deny"            // a request was refused by policy (or policy failed: fail closed)
	TypeAdminRequest    = "admin.request"          // an admin API change was allowed and is about to be made
	TypeAdminChange     = "admin.change"           // the admin API changed the registry
	TypeAdminDeny       = "admin.deny"             // the admin API refused a caller
	TypeAdminProbe      = "admin.probe"            // calls no admin API route takes, from one client, summarised
	TypeProxyProbe      = "proxy.probe"            // requests for gateways that do not exist, from one client, summarised
	TypeAuditRead       = "audit.read"             // someone read audit events through the admin API
	TypeCheckpoint      = "audit.checkpoint"       // a signed checkpoint of the chain head
	TypeRetentionDelete = "audit.retention.delete" // an archive segment past its retention was deleted
	TypeSecretOpen      = "secret.open"            // a tenant secret was opened (keystore.EventSecretOpen)
	TypeSessionStart    = "session.start"          // a browser signed in to a gateway's host (a launch link)
	TypeProvisionStep   = "provision.step"         // the provisioner ensured or destroyed one resource of a gateway
	TypePolicyReload    = "policy.reload"          // a candidate policy set went live, or was refused
	TypePolicyDecision  = "policy.decision"        // a policy decision that allowed, sampled: the decision log of allows
)

// Event types of policy revisions (shadow mode, promotion; issue 12).
const (
	TypePolicyShadow   = "policy.shadow_difference" // the shadowed candidate set would have decided otherwise
	TypePolicyPromote  = "policy.promote"           // the candidate set was promoted (made live), or refused
	TypePolicyRollback = "policy.rollback"          // the previous policy revision was re-activated, or refused
)

// Actor is who acted: a subject kind and id, never a credential.
type Actor struct {
	Kind string `json:"kind"`
	ID   string `json:"id,omitempty"`
}

// Event is one audit record. Fields marked "set by Emit" are filled in when it is written.
// Hash must stay the last field: seal relies on it.
type Event struct {
	Schema         int               `json:"schema"`            // set by Emit
	ID             string            `json:"id"`                // set by Emit: sortable (time first)
	Seq            uint64            `json:"seq"`               // set by Emit: position in the chain, from 1
	Time           time.Time         `json:"time"`              // set by Emit when zero
	Type           string            `json:"type"`              // one of the Type constants
	Actor          Actor             `json:"actor"`             //
	Tenant         string            `json:"tenant,omitempty"`  //
	Gateway        string            `json:"gateway,omitempty"` //
	Action         string            `json:"action,omitempty"`  // the policy action, e.g. tools.invoke
	Outcome        string            `json:"outcome"`           // one of the Outcome constants its type takes (schema.go)
	Reason         string            `json:"reason,omitempty"`  // a stable reason code
	RequestID      string            `json:"request_id,omitempty"`
	ClientIP       string            `json:"client_ip,omitempty"`
	PolicyRevision string            `json:"policy_revision,omitempty"`
	Details        map[string]string `json:"details,omitempty"` // no secrets
	Replica        string            `json:"replica,omitempty"` // set by Emit: the chain's replica
	// Decision holds the OPA decision-log fields of decision events (policy.deny,
	// admin.deny, authn.failure, policy.decision); set by Emit. Its fields appear at the top level of the
	// JSON object. A caller may set DecisionID (the policy decision's id), Input (the
	// masked policy input) and Erased; Emit fills in the rest.
	*Decision
	Prev string `json:"prev"` // set by Emit: hash of the previous event
	Hash string `json:"hash"` // set by Emit: hash of this event
}

// DecisionPath is the OPA decision-log "path" of moltgate's decisions.
const DecisionPath = "moltgate/authz/decision"

// Decision is the part of a decision event that OPA's decision-log tooling reads
// (decision_id, path, input, result, timestamp, labels). Input is a subset of the policy
// input without secrets.
type Decision struct {
	DecisionID string `json:"decision_id"`
	Path       string `json:"path"`
	// Input is the policy input as recorded: a DecisionInput, or the caller's masked input.
	Input     json.RawMessage   `json:"input"`
	Result    DecisionResult    `json:"result"`
	Timestamp string            `json:"timestamp"`
	Labels    map[string]string `json:"labels,omitempty"`
	// Erased lists the input's fields removed before writing, as OPA's mask paths
	// (/input/ws/channels): what held or may have held a credential.
	Erased []string `json:"erased,omitempty"`
	// Revision is the policy revision that decided, where OPA's tooling reads it.
	Revision string `json:"revision,omitempty"`
	// RequestedBy is the client address, as OPA names the caller of a decision.
	RequestedBy string `json:"requested_by,omitempty"`
	// Reused is true when the engine took the decision from its exact memo rather than
	// evaluating it again (it still has an id of its own).
	Reused bool `json:"reused,omitempty"`
}

// DecisionInput is the recorded subset of the policy input.
type DecisionInput struct {
	Subject  Actor         `json:"subject"`
	Gateway  DecisionGWRef `json:"gateway"`
	Action   string        `json:"action,omitempty"`
	ClientIP string        `json:"client_ip,omitempty"`
	Method   string        `json:"method,omitempty"`
}

// DecisionGWRef names the gateway a decision was about.
type DecisionGWRef struct {
	ID     string `json:"id,omitempty"`
	Tenant string `json:"tenant,omitempty"`
}

// DecisionResult is data.moltgate.authz.decision as recorded: refused, with its reason.
type DecisionResult struct {
	Allow  bool   `json:"allow"`
	Reason string `json:"reason,omitempty"`
}

// decisionFor fills the OPA fields of a decision event from its moltgate fields and what
// the caller set in e.Decision (decision id, input, erased).
func decisionFor(e *Event) *Decision {
	d := &Decision{
		DecisionID:  e.ID,
		Path:        DecisionPath,
		Result:      DecisionResult{Allow: e.Outcome == OutcomeAllow || e.Outcome == OutcomeSuccess, Reason: e.Reason},
		Timestamp:   e.Time.Format(time.RFC3339Nano),
		Labels:      map[string]string{"replica": e.Replica, "revision": e.PolicyRevision},
		Revision:    e.PolicyRevision,
		RequestedBy: e.ClientIP,
	}
	if given := e.Decision; given != nil {
		if given.DecisionID != "" {
			d.DecisionID = given.DecisionID
		}
		d.Input, d.Erased, d.Reused = given.Input, given.Erased, given.Reused
	}
	if d.Input == nil {
		// A struct of strings always encodes.
		d.Input, _ = json.Marshal(DecisionInput{Subject: e.Actor, Gateway: DecisionGWRef{ID: e.Gateway, Tenant: e.Tenant},
			Action: e.Action, ClientIP: e.ClientIP, Method: e.Details["method"]})
	}
	return d
}

// isDecision reports whether events of type typ carry the OPA decision-log fields.
func isDecision(typ string) bool {
	return typ == TypePolicyDeny || typ == TypeAdminDeny || typ == TypeAuthnFailure || typ == TypePolicyDecision
}

// genesis is the Prev of the first event of a chain.
const genesis = "0000000000000000000000000000000000000000000000000000000000000000"

// hashTail is how an event with an empty Hash ends when encoded: Hash is the last field.
const hashTail = `"hash":""}`

// seal sets e.Hash to the SHA-256 of e encoded with an empty Hash and returns the encoded
// line (newline-terminated). One encoding: the hash is spliced into the hashed bytes.
func (e *Event) seal() ([]byte, error) {
	e.Hash = ""
	body, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("audit: encode: %w", err)
	}
	sum := sha256.Sum256(body)
	e.Hash = hex.EncodeToString(sum[:])
	n := len(body) - 2 // before `"}`
	line := make([]byte, 0, len(body)+len(e.Hash)+1)
	line = append(line, body[:n]...)
	line = append(line, e.Hash...)
	line = append(line, `"}`...)
	return append(line, '\n'), nil
}

// newID returns a 26-hex-digit id whose first 12 digits are the time in milliseconds, so ids
// sort by time; the rest is random.
func newID(t time.Time) string {
	var b [13]byte
	binary.BigEndian.PutUint64(b[:8], uint64(t.UnixMilli())<<16)
	_, _ = rand.Read(b[6:])
	return hex.EncodeToString(b[:])
}
