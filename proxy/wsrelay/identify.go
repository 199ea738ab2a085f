package wsrelay

// A socket upgraded without a credential (token mode; Session.Identify set) identifies in
// its connect request, and until that request is allowed the relay speaks the start of the
// OpenClaw protocol itself: it sends the challenge, reads the connect request, identifies
// and decides it, and only then dials the gateway. Nothing of an unidentified caller, not
// even a TCP connection, reaches a gateway.
//
// The nonce. A device-identity client signs the challenge's nonce together with its
// client id and mode, role, scopes, the time and the credential it sends (the gateway's
// buildDeviceAuthPayload v2/v3, checked by verifyGatewayConnectDeviceProof). The gateway's
// own nonce cannot be given to the client before the gateway is dialled, so the client
// signs the relay's instead. That costs nothing: rewriteConnect replaces the credential the
// proof signs (the gateway token goes in, or in trusted-proxy mode no token), so no client
// proof could verify at the gateway whatever nonce it signed, and the relay drops it (only
// the Control UI's goes on, on a socket decided at the upgrade: keepsDeviceProof). What the
// relay does check is that a proof signs the challenge it
// sent this socket, as the gateway would: a connect request made for another connection
// (captured and replayed) is refused. The gateway's own challenge is read after the dial
// and before the connect request is written, so anything that has to sign for the gateway
// can sign its real nonce. Clients whose device proof must reach the gateway upgrade with
// their credential on the request (header or cookie): those are decided at the upgrade,
// dialled at once, and get the gateway's challenge unchanged.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/moltgate/moltgate/audit"
)

// challengeTimeout bounds the wait for the gateway's challenge after the dial.
const challengeTimeout = 10 * time.Second

// challenge sends a socket still to be identified the relay's own connect.challenge, shaped
// as the gateway's: a fresh nonce, the time in milliseconds and the server's capabilities.
// It offers none: the relay cannot vouch for the gateway's before dialling it, and the one
// the pinned gateway offers (model-catalog-snapshot) serves node clients, which are refused.
func (c *conn) challenge(ctx context.Context) {
	c.nonce = newNonce()
	msg, _ := json.Marshal(map[string]any{"type": "event", "event": "connect.challenge",
		"payload": map[string]any{"nonce": c.nonce, "ts": c.rl.deps.Now().UnixMilli(), "capabilities": []string{}}})
	c.reply(ctx, msg) // a client that does not take it is closed
}

// newNonce returns a random UUID (version 4), as the gateway's nonces are.
func newNonce() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// identifyTimedOut closes a socket that has not been identified within IdentifyTimeout of
// its upgrade: an anonymous socket must not be held open for free.
func (c *conn) identifyTimedOut() {
	c.mu.Lock()
	pending := c.s.Identify != nil
	c.mu.Unlock()
	if !pending {
		return
	}
	c.audit(audit.TypePolicyDeny, "identify_timeout", "")
	c.end(closeIdentifyTimeout, websocket.StatusPolicyViolation, "identify timeout")
}

// deviceNonceRefusal returns why the device proof of a connect request the relay identifies
// is refused, or "": a proof must sign the challenge the relay sent this socket. The gateway
// refuses any other nonce ("device nonce mismatch"); the relay drops the proof before the
// gateway could (rewriteConnect), so it checks the nonce itself.
func (c *conn) deviceNonceRefusal(f *frame) string {
	raw, ok := f.params["device"]
	if !ok || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return ""
	}
	var device map[string]json.RawMessage // exact keys, as the gateway reads them
	if json.Unmarshal(raw, &device) != nil || device == nil {
		return "device_invalid"
	}
	var nonce string
	if json.Unmarshal(device["nonce"], &nonce) != nil || strings.TrimSpace(nonce) != c.nonce {
		return "device_nonce_mismatch"
	}
	return ""
}

// dialGateway opens the gateway side of a socket whose connect request f has just been
// allowed, and reads the gateway's challenge, which is not relayed (the client has had the
// relay's). It reports whether the socket goes on; if not, the client has been answered.
func (c *conn) dialGateway(ctx context.Context, f *frame) bool {
	if c.closedByUs() { // the identify deadline, a recheck or shutdown came first
		return false
	}
	c.mu.Lock()
	s := c.s
	c.mu.Unlock()
	up, err := c.rl.dial(ctx, s, c.upstreamOrigin)
	if err != nil {
		c.rl.deps.Logger.LogAttrs(ctx, slog.LevelWarn, "wsrelay: gateway dial failed",
			slog.String("request_id", s.RequestID), slog.String("gateway", s.Entry.ID), slog.Any("err", err))
		c.reply(ctx, errorResponse(f.id, "UNAVAILABLE", "moltgate: upstream_unavailable"))
		c.end(closeUnavailable, websocket.StatusInternalError, "gateway unavailable")
		return false
	}
	c.mu.Lock()
	if c.closedByUs() {
		c.mu.Unlock()
		up.CloseNow()
		return false
	}
	c.upstream = up // from here end closes it
	c.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, challengeTimeout)
	typ, data, err := up.Read(rctx)
	cancel()
	switch {
	case err != nil:
		var ce websocket.CloseError
		if errors.As(err, &ce) {
			c.gatewayGone(err) // its refusal (say, 1013 while it starts) reaches the client
		} else {
			c.end(closeUpstream, websocket.StatusInternalError, "gateway connection lost")
		}
		return false
	case typ != websocket.MessageText || !isChallenge(data):
		c.end(closeUpstream, websocket.StatusInternalError, "gateway did not send connect.challenge")
		return false
	}
	c.startGateway(ctx)
	return true
}

// isChallenge reports whether data is the gateway's connect.challenge event.
func isChallenge(data []byte) bool {
	var fields map[string]json.RawMessage
	if json.Unmarshal(data, &fields) != nil {
		return false
	}
	var typ, event string
	return json.Unmarshal(fields["type"], &typ) == nil && typ == "event" &&
		json.Unmarshal(fields["event"], &event) == nil && event == "connect.challenge"
}
