package audit

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
)

// A checkpoint is a chain event of type audit.checkpoint whose details carry an Ed25519
// signature over the chain head before it (replica, seq and hash), so rewriting the chain
// from any point — recomputing every hash — still fails at the next checkpoint unless the
// rewriter holds the signing key, which lives sealed in the keystore. The public key is in
// the checkpoint too (for a quick self-check); Verify with a trusted key checks against it.

// checkpointMessage is what a checkpoint signs.
func checkpointMessage(replica string, headSeq uint64, headHash string) []byte {
	return fmt.Appendf(nil, "moltgate-audit-checkpoint/v1\n%s\n%d\n%s\n", replica, headSeq, headHash)
}

// checkpointLocked appends a checkpoint of the current head.
func (l *FileLog) checkpointLocked() error {
	key := l.cfg.Signer
	sig := ed25519.Sign(key, checkpointMessage(l.cfg.Replica, l.seq, l.prev))
	e := Event{Type: TypeCheckpoint, Actor: Actor{Kind: "system", ID: "moltgate"}, Outcome: "success",
		Details: map[string]string{
			"head_seq":  strconv.FormatUint(l.seq, 10),
			"head_hash": l.prev,
			"key":       PublicKeyHex(key.Public().(ed25519.PublicKey)),
			"sig":       base64.StdEncoding.EncodeToString(sig),
		}}
	if err := l.appendLocked(&e); err != nil {
		return err
	}
	l.cpSeq, l.cpTime = e.Seq, e.Time
	l.m.checkpoints.Inc()
	l.m.event(TypeCheckpoint).Inc()
	return nil
}

// PublicKeyHex is how checkpoint keys are written and given to verify.
func PublicKeyHex(pub ed25519.PublicKey) string { return hex.EncodeToString(pub) }

// ParsePublicKey reads a key written by PublicKeyHex.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("audit: public key: want 64 hex digits")
	}
	return ed25519.PublicKey(b), nil
}

// checkCheckpoint verifies a checkpoint event against its predecessor and, when trusted is
// set, against that key. It returns why it fails, or "".
func checkCheckpoint(e *Event, trusted ed25519.PublicKey) string {
	d := e.Details
	seq, err := strconv.ParseUint(d["head_seq"], 10, 64)
	if err != nil || seq != e.Seq-1 || d["head_hash"] != e.Prev {
		return "checkpoint does not name the event before it"
	}
	pub, err := ParsePublicKey(d["key"])
	if err != nil {
		return "checkpoint key unreadable"
	}
	if trusted != nil && !pub.Equal(trusted) {
		return "checkpoint signed by a key that is not the trusted one"
	}
	sig, err := base64.StdEncoding.DecodeString(d["sig"])
	if err != nil || !ed25519.Verify(pub, checkpointMessage(e.Replica, seq, e.Prev), sig) {
		return "checkpoint signature does not verify"
	}
	return ""
}
