package wsrelay

import (
	"bytes"
	"encoding/json"

	"github.com/moltgate/moltgate/registry"
)

// keepsDeviceProof reports whether a connect request's device proof can go to the gateway
// as the client signed it. The pinned gateway refuses a Control UI client without a device
// identity in token mode ("control ui requires device identity": evaluateMissingDeviceIdentity
// in dist/message-handler-*.mjs), and verifies the signature over the device id, client id
// and mode, role, scopes, time, nonce and the connect's auth.token (else auth.deviceToken,
// else auth.bootstrapToken): resolveDeviceSignaturePayloadVersion in
// dist/node-connect-reconcile-*.mjs. So the proof survives only when moltgate changes none of
// those: a browser socket of the gateway's own origin in token mode, whose connect carries
// no token of any kind (the Control UI's, when no token was pasted), whose scopes are left as
// asked (the X-Openclaw-Scopes header on the upgrade caps them instead; upstreamCapped), and
// the gateway token goes in auth.password, which the gateway takes as the shared secret in
// token mode (resolveConnectSecret in dist/auth-*.mjs) and which the signature does not cover.
func (c *conn) keepsDeviceProof(f *frame) bool {
	// A socket the relay identified had the relay's challenge, not the gateway's (nonce):
	// its proof cannot verify there.
	if c.nonce != "" || c.upstreamOrigin == "" || !c.upstreamCapped || c.s.Entry.AuthMode == registry.AuthTrustedProxy {
		return false
	}
	raw, ok := f.params["device"]
	if !ok || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return false
	}
	var auth map[string]json.RawMessage
	if raw, ok := f.params["auth"]; ok && json.Unmarshal(raw, &auth) != nil {
		return false
	}
	for _, k := range []string{"token", "deviceToken", "bootstrapToken"} {
		var v any
		if raw, ok := auth[k]; ok && json.Unmarshal(raw, &v) == nil && v != nil && v != "" {
			return false
		}
	}
	return true
}

// scrubHello removes the device credentials from the gateway's answer to connect request id:
// a device token the gateway issued to the browser's device would let that browser sign in
// to the gateway without moltgate, with the scopes its device was paired with, which a
// proxied browser asks for in full whatever its role. found is false, and data is returned
// as it is, when the message is not that answer. An answer that cannot be re-encoded is an
// error: it must not reach the client with the token in it.
func scrubHello(data []byte, id json.RawMessage) (out []byte, found bool, err error) {
	var msg map[string]json.RawMessage
	if json.Unmarshal(data, &msg) != nil {
		return data, false, nil
	}
	var typ string
	if json.Unmarshal(msg["type"], &typ) != nil || typ != "res" || !bytes.Equal(bytes.TrimSpace(msg["id"]), id) {
		return data, false, nil
	}
	var payload, auth map[string]json.RawMessage
	if json.Unmarshal(msg["payload"], &payload) != nil || json.Unmarshal(payload["auth"], &auth) != nil || auth == nil {
		return data, true, nil // a refusal, or no credentials
	}
	changed := false
	for _, k := range []string{"deviceToken", "deviceTokens", "issuedAtMs", "recoveryMigrationAllowed"} {
		if _, ok := auth[k]; ok {
			delete(auth, k)
			changed = true
		}
	}
	if !changed {
		return data, true, nil
	}
	if payload["auth"], err = json.Marshal(auth); err == nil {
		if msg["payload"], err = json.Marshal(payload); err == nil {
			out, err = json.Marshal(msg)
		}
	}
	if err != nil {
		return nil, true, err
	}
	return out, true, nil
}
