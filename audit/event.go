// Package audit records security events: authentication failures, policy denials and admin
// changes. Each event carries the hash of its predecessor, so an edited, deleted, inserted or
// reordered event breaks the chain and Verify names it.
//
// Invariants: events never contain a secret (callers pass ids and reason codes, never tokens);
// an event Emit returned nil for has been written to the file.
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

// Schema is the version of the event format.
const Schema = 1

// Event types.
const (
	TypeAuthnFailure = "authn.failure" // a credential was presented and refused
	TypePolicyDeny   = "policy.deny"   // a request was refused by policy (or policy failed: fail closed)
	TypeAdminChange  = "admin.change"  // the admin API changed the registry
	TypeAdminDeny    = "admin.deny"    // the admin API refused a caller
)

// Actor is who acted: a subject kind and id, never a credential.
type Actor struct {
	Kind string `json:"kind"`
	ID   string `json:"id,omitempty"`
}

// Event is one audit record. Fields marked "set by Emit" are filled in when it is written.
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
	Outcome        string            `json:"outcome"`           // "deny", "error" or "success"
	Reason         string            `json:"reason,omitempty"`  // a stable reason code
	RequestID      string            `json:"request_id,omitempty"`
	ClientIP       string            `json:"client_ip,omitempty"`
	PolicyRevision string            `json:"policy_revision,omitempty"`
	Details        map[string]string `json:"details,omitempty"` // no secrets
	Prev           string            `json:"prev"`              // set by Emit: hash of the previous event
	Hash           string            `json:"hash"`              // set by Emit: hash of this event
}

// genesis is the Prev of the first event of a chain.
const genesis = "0000000000000000000000000000000000000000000000000000000000000000"

// seal sets e.Hash from prev and the rest of the event and returns the encoded line.
func (e *Event) seal() ([]byte, error) {
	e.Hash = ""
	body, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("audit: encode: %w", err)
	}
	sum := sha256.Sum256(body)
	e.Hash = hex.EncodeToString(sum[:])
	line, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("audit: encode: %w", err)
	}
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
