package wsrelay

import (
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/policies"
)

// RefreshMethod is the request a client sends on an open socket to present a fresh Clerk
// session token before the one that opened the socket expires:
// {"type":"req","id":…,"method":"moltgate.session.refresh","params":{"token":"<jwt>"}}.
// moltgate answers it itself; the gateway never sees it.
const RefreshMethod = "moltgate.session.refresh"

// Close reasons (metric label values).
const (
	closeClient    = "client_closed"
	closeGateway   = "gateway_closed"
	closeRevoked   = "revoked"
	closeExpired   = "expired"
	closeIdle      = "idle"
	closeRate      = "rate_limited"
	closeTooBig    = "too_big"
	closeProtocol  = "protocol"
	closeShutdown  = "shutdown"
	closeSlow      = "slow_reader"
	closeUpstream  = "upstream_error"
	closePolicyErr = "policy_error"
	closeAuditErr  = "audit_unavailable"
	// Of sockets the relay answers until they identify (identify.go).
	closeUnavailable     = "upstream_unavailable"
	closeIdentifyTimeout = "identify_timeout"
	closeTooMany         = "too_many_connections"
)

// copyBuffers lend the gateway→client copy its buffer only while a message is in flight, so
// an idle socket holds none.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

type conn struct {
	rl *Relay
	s  Session
	// upstream is nil until the gateway is dialled, which for a socket identified by its
	// connect request is after that request is allowed; it is set under mu.
	client, upstream *websocket.Conn
	tokenHash        []byte

	// Touched only by the goroutine that runs the socket and the client reader's.
	slot string // the key the relay counts the socket under
	// giveBack gives back the socket's slot in the count across replicas (Relay.takeShared).
	giveBack func()
	nonce    string        // of the challenge the relay sent, for a socket it identifies
	upDone   chan struct{} // closed when fromGateway returns; nil until it starts

	// upstreamOrigin is the Origin the gateway was dialled with ("" for none), and
	// upstreamCapped whether the upgrade carried X-Openclaw-Scopes (scopeCap).
	upstreamOrigin string
	upstreamCapped bool
	// helloID is the id of a connect request forwarded with the client's device proof: the
	// gateway's answer to it is scrubbed of device credentials (scrubHello). Set by the
	// client reader before it forwards connect, read by the gateway reader.
	helloID atomic.Pointer[json.RawMessage]

	closeOnce sync.Once
	done      chan struct{}
	closers   sync.WaitGroup // the close handshakes end() started; run waits for them

	mu         sync.Mutex
	expires    time.Time
	expiry     *time.Timer
	idle       *time.Timer
	ping       *time.Timer
	identifyBy *time.Timer // closes a socket not identified in time
	connected  bool        // the first frame (connect) has gone through

	refused refusals // runs of refused messages, summarised in the audit trail

	// writingSince is when the write of a gateway message to the client began (Unix ns), 0
	// between messages: when that write times out, coder/websocket drops the connection and
	// the client reader may see it first, as if the client had gone.
	writingSince atomic.Int64

	// decisions remembers this socket's recent decisions; touched only by the client reader
	// and the message goroutines it waits for.
	decisions decisionCache

	// Rate limiting, touched only by the client reader.
	tokens float64
	refill time.Time
}

func newConn(rl *Relay, s Session, client, upstream *websocket.Conn) *conn {
	c := &conn{rl: rl, s: s, client: client, upstream: upstream, done: make(chan struct{}), giveBack: func() {},
		expires: s.Expires, tokens: float64(rl.cfg.Burst), refill: rl.deps.Now()}
	if s.Subject.Kind == policies.SubjectGatewayToken {
		c.tokenHash = slices.Clone(s.Entry.TokenHash)
	}
	client.SetReadLimit(rl.cfg.MaxMessageBytes)
	return c
}

// run relays until the socket ends. ctx has no Done channel (Serve detached it from the
// request): a socket ends by being closed (end), never by cancellation, and coder/websocket
// registers a callback on every read whose context can be cancelled, for each idle socket.
func (c *conn) run(ctx context.Context) {
	c.mu.Lock()
	if !c.expires.IsZero() {
		c.expiry = time.AfterFunc(c.expires.Sub(c.rl.deps.Now()), c.expired)
	}
	c.idle = time.AfterFunc(c.rl.cfg.IdleTimeout, func() {
		c.end(closeIdle, websocket.StatusGoingAway, "idle timeout")
	})
	c.ping = time.AfterFunc(c.rl.cfg.PingInterval, func() { c.pingClient(ctx) })
	if c.s.Identify != nil {
		c.identifyBy = time.AfterFunc(c.rl.cfg.IdentifyTimeout, c.identifyTimedOut)
	}
	c.mu.Unlock()
	if c.s.Ended != nil {
		go func() {
			select {
			case <-c.s.Ended:
				c.audit(audit.TypePolicyDeny, "session_ended", "")
				c.end(closeRevoked, websocket.StatusPolicyViolation, "session ended")
			case <-c.done:
			}
		}()
	}
	if c.upstream != nil {
		c.startGateway(ctx)
	} else {
		c.challenge(ctx)
	}
	c.fromClient(ctx)
	// Every way out of fromClient has ended the socket, perhaps from another goroutine (a
	// shutdown, a recheck) whose end closed the client and so made the read fail: an
	// ordering through the network, which the memory model does not count. Ending it here
	// again does nothing but pass closeOnce, which orders this goroutine after that end
	// started its closers, so closers.Wait below cannot race with their Go.
	c.end(closeClient, websocket.StatusGoingAway, "")
	c.flushRefusals()
	if c.upDone != nil {
		<-c.upDone
	}
	c.closers.Wait()
	c.mu.Lock()
	for _, t := range []*time.Timer{c.expiry, c.idle, c.ping, c.identifyBy} {
		if t != nil {
			t.Stop()
		}
	}
	c.mu.Unlock()
}

func (c *conn) touch() {
	c.mu.Lock()
	c.idle.Reset(c.rl.cfg.IdleTimeout)
	c.mu.Unlock()
}

func (c *conn) pingClient(ctx context.Context) {
	select {
	case <-c.done:
		return
	default:
	}
	pctx, cancel := context.WithTimeout(ctx, c.rl.cfg.WriteTimeout)
	err := c.client.Ping(pctx)
	cancel()
	if err != nil {
		c.end(closeSlow, websocket.StatusGoingAway, "ping timeout")
		return
	}
	c.mu.Lock()
	c.ping.Reset(c.rl.cfg.PingInterval)
	c.mu.Unlock()
}

func (c *conn) expired() {
	c.audit(audit.TypePolicyDeny, "session_expired", "")
	c.end(closeExpired, websocket.StatusPolicyViolation, "session expired")
}

// startGateway starts relaying the gateway's messages to the client.
func (c *conn) startGateway(ctx context.Context) {
	done := make(chan struct{})
	c.upDone = done
	go func() { defer close(done); c.fromGateway(ctx) }()
}

// end closes both sides once: the client with code and reason, the gateway (if dialled) as
// going away.
func (c *conn) end(metric string, code websocket.StatusCode, reason string) {
	c.closeOnce.Do(func() {
		close(c.done)
		c.rl.m.closes.WithLabelValues(metric).Inc()
		c.mu.Lock()
		upstream := c.upstream // once done is closed, nothing sets it (dialGateway)
		c.mu.Unlock()
		// Both handshakes wait for the peer's close frame (up to 5s): run them side by side,
		// so a timer or a recheck calling end never blocks on a silent peer.
		if upstream != nil {
			c.closers.Go(func() { upstream.Close(websocket.StatusGoingAway, "client connection closed") })
		}
		c.closers.Go(func() { c.client.Close(code, reason) })
	})
}

// close is end for the relay's own reasons (shutdown).
func (c *conn) close(code websocket.StatusCode, reason string) { c.end(closeShutdown, code, reason) }

// fromGateway streams gateway messages to the client, one at a time: a client that does not
// take a message within WriteTimeout is closed rather than buffered for.
func (c *conn) fromGateway(ctx context.Context) {
	for {
		typ, r, err := c.upstream.Reader(ctx)
		if err != nil {
			c.gatewayGone(err)
			return
		}
		if id := c.helloID.Load(); id != nil && typ == websocket.MessageText {
			if !c.relayHello(ctx, r, *id) {
				return
			}
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, c.rl.cfg.WriteTimeout)
		c.writingSince.Store(time.Now().UnixNano())
		w, err := c.client.Writer(wctx, typ)
		if err == nil {
			bp := copyBuffers.Get().(*[]byte)
			_, err = io.CopyBuffer(w, r, *bp)
			copyBuffers.Put(bp)
			if cerr := w.Close(); err == nil {
				err = cerr
			}
		}
		slow := wctx.Err() != nil // the error may only say "closed": coder/websocket drops the connection when the context ends
		cancel()
		c.writingSince.Store(0)
		if err != nil {
			if slow {
				c.end(closeSlow, websocket.StatusPolicyViolation, "client too slow")
			} else {
				c.end(closeClient, websocket.StatusGoingAway, "")
			}
			return
		}
		c.rl.m.gatewayMessages.Inc()
		c.touch()
	}
}

// relayHello relays one whole gateway message while the answer to a connect forwarded with
// a device proof is awaited, scrubbed of device credentials if it is that answer. It
// reports whether the socket stays open.
func (c *conn) relayHello(ctx context.Context, r io.Reader, id json.RawMessage) bool {
	data, err := io.ReadAll(r)
	if err != nil {
		c.gatewayGone(err)
		return false
	}
	out, found, err := scrubHello(data, id)
	if err != nil {
		c.end(closeUpstream, websocket.StatusInternalError, "gateway answer unreadable")
		return false
	}
	if found {
		c.helloID.Store(nil)
	}
	wctx, cancel := context.WithTimeout(ctx, c.rl.cfg.WriteTimeout)
	err = c.client.Write(wctx, websocket.MessageText, out)
	slow := wctx.Err() != nil
	cancel()
	if err != nil {
		if slow {
			c.end(closeSlow, websocket.StatusPolicyViolation, "client too slow")
		} else {
			c.end(closeClient, websocket.StatusGoingAway, "")
		}
		return false
	}
	c.rl.m.gatewayMessages.Inc()
	c.touch()
	return true
}

// gatewayGone passes the gateway's close code and reason on to the client.
func (c *conn) gatewayGone(err error) {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		code := ce.Code
		if code == websocket.StatusNoStatusRcvd {
			code = websocket.StatusNormalClosure
		}
		c.end(closeGateway, code, ce.Reason)
		return
	}
	c.end(closeUpstream, websocket.StatusInternalError, "gateway connection lost")
}

// fromClient reads, checks and decides every client message.
func (c *conn) fromClient(ctx context.Context) {
	for {
		typ, data, err := c.client.Read(ctx)
		if err != nil {
			c.clientGone(err)
			return
		}
		start := time.Now()
		c.touch()
		if c.s.Active != nil {
			c.s.Active()
		}
		if !c.allowRate() {
			c.audit(audit.TypePolicyDeny, "rate_limited", "")
			c.end(closeRate, websocket.StatusPolicyViolation, "message rate limit exceeded")
			return
		}
		if typ != websocket.MessageText {
			c.end(closeProtocol, websocket.StatusPolicyViolation, "binary messages are not accepted")
			return
		}
		// Parsing, deciding and answering grow a stack to 8 KiB and more, which this
		// goroutine would keep for as long as the socket then idles: a stack is halved
		// only when under a quarter of it is in use, and the blocked read alone uses more
		// than 2 KiB. On a goroutine of its own, the grown stack lives as long as the
		// message, and this one stays at 4 KiB.
		open := false
		onFreshStack(func() { open = c.handleData(ctx, data) })
		if !open {
			return
		}
		c.rl.m.relay.Observe(time.Since(start).Seconds())
	}
}

// onFreshStack runs fn on a new goroutine and waits for it. Handling a message (JSON,
// policy evaluation, token verification) recurses deeply, and a goroutine keeps a grown stack
// until a garbage collection finds it mostly unused, which for an idle socket may be never:
// run there, the deep stack lives only as long as fn, and each socket's own goroutines stay
// small.
func onFreshStack(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
}

func (c *conn) clientGone(err error) {
	switch websocket.CloseStatus(err) {
	case websocket.StatusMessageTooBig:
		c.end(closeTooBig, websocket.StatusMessageTooBig, "message too big")
	case -1:
		var ce websocket.CloseError
		if errors.As(err, &ce) {
			c.end(closeClient, websocket.StatusGoingAway, "")
		} else if c.closedByUs() {
			return
		} else if c.writeTimedOut() {
			c.end(closeSlow, websocket.StatusPolicyViolation, "client too slow")
		} else {
			// coder/websocket answers an oversized message with 1009 itself and returns
			// a plain error; anything else is a lost connection.
			c.end(closeClient, websocket.StatusGoingAway, "")
		}
	default:
		c.end(closeClient, websocket.StatusGoingAway, "")
	}
}

// writeTimedOut reports whether a write to the client has been going on for WriteTimeout.
func (c *conn) writeTimedOut() bool {
	since := c.writingSince.Load()
	return since != 0 && time.Since(time.Unix(0, since)) >= c.rl.cfg.WriteTimeout
}

func (c *conn) closedByUs() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// handleData parses a client message and handles it. It reports whether the socket stays
// open.
func (c *conn) handleData(ctx context.Context, data []byte) bool {
	// RFC 6455 §8.1: a text message that is not UTF-8 fails the connection. The gateway's
	// WebSocket library would close on it too, after moltgate had decided on Go's reading
	// of it (invalid bytes as U+FFFD).
	if !utf8.Valid(data) {
		c.end(closeProtocol, websocket.StatusInvalidFramePayloadData, "text message is not UTF-8")
		return false
	}
	f, err := parseFrame(data)
	if err != nil {
		c.end(closeProtocol, websocket.StatusPolicyViolation, "not an OpenClaw request frame")
		return false
	}
	return c.handle(ctx, f, data)
}

// handle decides one request frame and forwards, refuses or answers it. It reports whether
// the socket stays open.
func (c *conn) handle(ctx context.Context, f *frame, data []byte) bool {
	c.mu.Lock()
	first := !c.connected
	c.mu.Unlock()
	switch {
	case first && f.method != "connect":
		c.audit(audit.TypePolicyDeny, "connect_required", f.method)
		c.end(closeProtocol, websocket.StatusPolicyViolation, "the first request must be connect")
		return false
	case first:
		if reason := connectRefusal(f); reason != "" {
			return c.refuseConnect(ctx, f, closeProtocol, audit.TypePolicyDeny, "FORBIDDEN", reason)
		}
		// This goroutine is the only one that changes Identify (identify, under mu).
		pending := c.s.Identify != nil
		if pending {
			if reason := c.deviceNonceRefusal(f); reason != "" {
				return c.refuseConnect(ctx, f, closeProtocol, audit.TypePolicyDeny, "INVALID_REQUEST", reason)
			}
			if !c.identify(ctx, f) {
				return false
			}
		}
		out, kept, err := c.rewriteConnect(f)
		if err != nil {
			c.end(closeProtocol, websocket.StatusPolicyViolation, "malformed connect")
			return false
		}
		if pending && !c.dialGateway(ctx, f) {
			return false
		}
		c.mu.Lock()
		c.connected = true
		c.mu.Unlock()
		if kept {
			c.helloID.Store(&f.id)
		}
		return c.forward(ctx, out)
	case f.method == "connect":
		c.end(closeProtocol, websocket.StatusPolicyViolation, "connect sent twice")
		return false
	case f.method == RefreshMethod:
		return c.refresh(ctx, f)
	}
	tool, skill, ok := f.names()
	if !ok {
		c.rl.m.clientDenied.Inc()
		return c.refuse(ctx, f, "ambiguous_name", "INVALID_REQUEST", "moltgate: ambiguous_name")
	}
	d, err := c.decide(ctx, f, tool, skill)
	switch {
	case err != nil:
		c.rl.m.clientErrored.Inc()
		reason := policies.FailReason(err)
		if !errors.Is(err, policies.ErrStale) {
			c.rl.deps.Logger.LogAttrs(ctx, slog.LevelError, "wsrelay: policy evaluation failed",
				slog.String("request_id", c.s.RequestID), slog.Any("err", err))
		}
		return c.refuseDecided(ctx, f, d.ID, reason, "UNAVAILABLE", "moltgate: "+reason)
	case !d.Allow && d.MissingScope != "":
		c.rl.m.clientDenied.Inc()
		return c.refuseWith(ctx, f, d.Reason, d.ID, missingScopeResponse(f.id, d.Reason, d.MissingScope, d.ID))
	case !d.Allow:
		c.rl.m.clientDenied.Inc()
		return c.refuseDecided(ctx, f, d.ID, d.Reason, "FORBIDDEN", "moltgate: "+d.Reason)
	}
	return c.forward(ctx, data)
}

// refuseConnect records the refusal of connect request f, answers it with an error response
// and closes the socket (1008), its close counted as closeAs. It reports false: the socket is
// done.
func (c *conn) refuseConnect(ctx context.Context, f *frame, closeAs, typ, code, reason string) bool {
	return c.refuseConnectDecided(ctx, f, policies.NewDecisionID(), closeAs, typ, code, reason)
}

// refuseConnectDecided is refuseConnect by decision id.
func (c *conn) refuseConnectDecided(ctx context.Context, f *frame, id, closeAs, typ, code, reason string) bool {
	c.auditDecision(typ, reason, "connect", id, nil)
	c.reply(ctx, errorResponseWith(f.id, code, "moltgate: "+reason, refusalDetails{DecisionID: id}))
	c.end(closeAs, websocket.StatusPolicyViolation, reason)
	return false
}

// refuse records the refusal of request f and answers it with an error response. A refusal
// that cannot be put on record ends the socket instead: it must not go on being refused (or
// probed) unaudited.
func (c *conn) refuse(ctx context.Context, f *frame, reason, code, message string) bool {
	return c.refuseDecided(ctx, f, policies.NewDecisionID(), reason, code, message)
}

// refuseDecided is refuse by decision id: the error response's details.decision_id.
func (c *conn) refuseDecided(ctx context.Context, f *frame, id, reason, code, message string) bool {
	return c.refuseWith(ctx, f, reason, id, errorResponseWith(f.id, code, message, refusalDetails{DecisionID: id}))
}

// refuseWith is refuseDecided with the error response given.
func (c *conn) refuseWith(ctx context.Context, f *frame, reason, id string, response []byte) bool {
	if err := c.auditRefusal(reason, f.method, id); err != nil {
		c.end(closeAuditErr, websocket.StatusInternalError, "audit unavailable")
		return false
	}
	return c.reply(ctx, response)
}

func (c *conn) forward(ctx context.Context, data []byte) bool {
	wctx, cancel := context.WithTimeout(ctx, c.rl.cfg.WriteTimeout)
	err := c.upstream.Write(wctx, websocket.MessageText, data)
	cancel()
	if err != nil {
		c.end(closeUpstream, websocket.StatusInternalError, "gateway connection lost")
		return false
	}
	c.rl.m.clientAllowed.Inc()
	return true
}

func (c *conn) reply(ctx context.Context, msg []byte) bool {
	wctx, cancel := context.WithTimeout(ctx, c.rl.cfg.WriteTimeout)
	err := c.client.Write(wctx, websocket.MessageText, msg)
	cancel()
	if err != nil {
		c.end(closeSlow, websocket.StatusPolicyViolation, "client too slow")
		return false
	}
	return true
}

// identify authenticates a socket opened without credentials by the connect request's
// auth.token and decides it as its upgrade would have been, then counts it as its subject's
// socket. A refusal answers the connect with an error and closes the socket; no gateway has
// been dialled for it.
func (c *conn) identify(ctx context.Context, f *frame) bool {
	var auth struct {
		Token string `json:"token"`
	}
	if raw, ok := f.params["auth"]; ok {
		_ = json.Unmarshal(raw, &auth)
	}
	var d policies.Decision
	refuse := func(typ, code, reason string) bool {
		return c.refuseConnectDecided(ctx, f, cmp.Or(d.ID, policies.NewDecisionID()), closeRevoked, typ, code, reason)
	}
	if auth.Token == "" {
		return refuse(audit.TypePolicyDeny, "UNAUTHORIZED", "unauthenticated")
	}
	var (
		subject policies.Subject
		expires time.Time
		status  int
		reason  string
		in      = c.s.Input
		err     error
	)
	subject, expires, status, reason = c.s.Identify(ctx, auth.Token)
	if status == 0 {
		in.Subject = subject
		d, err = c.rl.deps.Policy.Decide(ctx, &in)
	}
	if status != 0 {
		return refuse(audit.TypeAuthnFailure, "UNAUTHORIZED", reason)
	}
	if err != nil {
		return refuse(audit.TypePolicyDeny, "UNAVAILABLE", "policy_error")
	}
	c.mu.Lock()
	c.s.Subject, c.s.Input = subject, in
	c.mu.Unlock()
	if !d.Allow {
		return refuse(audit.TypePolicyDeny, "FORBIDDEN", d.Reason)
	}
	// From here it is the subject's socket, under the subject's limit: counted by address
	// it would let one user hold max_conns_per_subject sockets on top of as many.
	key := subjectKey(subject)
	giveBack, refusal := c.rl.takeShared(ctx, key, c.s.RequestID)
	if refusal != nil {
		return c.refuseConnect(ctx, f, refusal.Reason, audit.TypePolicyDeny, "UNAVAILABLE", refusal.Reason)
	}
	if !c.rl.recount(c.slot, key) {
		giveBack()
		return c.refuseConnect(ctx, f, closeTooMany, audit.TypePolicyDeny, "UNAVAILABLE", "too_many_connections")
	}
	c.slot, c.giveBack = key, giveBack
	c.mu.Lock()
	c.s.Scopes = d.Scopes
	if subject.Kind == policies.SubjectGatewayToken {
		c.tokenHash = slices.Clone(c.s.Entry.TokenHash)
	}
	c.identifyBy.Stop()
	c.s.Identify, c.expires = nil, expires
	if !expires.IsZero() {
		c.expiry = time.AfterFunc(expires.Sub(c.rl.deps.Now()), c.expired)
	}
	c.mu.Unlock()
	return true
}

// internalClientIDs and internalClientModes are the connect-time client ids and modes the
// pinned gateway reserves for its own processes (GATEWAY_CLIENT_IDS and GATEWAY_CLIENT_MODES):
// its backend client, node hosts, workers, probes and tests. It trusts some of them beyond
// their scopes: a "backend" client may keep an agent request's prompt out of the session
// transcript (suppressPromptPersistence), which for a client of moltgate is audit evasion.
// openclaw-node presents itself as gateway-client/backend by default, so such a client is not
// refused: rewriteConnect names it to the gateway as what it is, a CLI client.
var (
	internalClientIDs   = []string{"gateway-client", "node-host", "openclaw-worker", "test", "fingerprint", "openclaw-probe"}
	internalClientModes = []string{"backend", "node", "worker", "probe", "test"}
)

// connectRefusal returns why a connect request is refused before it reaches the gateway, or
// "": a client through moltgate connects as an operator (role "operator", or none), and its
// client description, if any, is an object.
func connectRefusal(f *frame) string {
	if raw, ok := f.params["role"]; ok {
		var role string
		if json.Unmarshal(raw, &role) != nil || role != "operator" {
			return "role_not_allowed"
		}
	}
	if raw, ok := f.params["client"]; ok {
		var client map[string]json.RawMessage
		if json.Unmarshal(raw, &client) != nil {
			return "client_not_allowed"
		}
	}
	return ""
}

// clientForGateway rewrites the connect request's client description: a client id or mode
// the gateway keeps for itself becomes "cli", and displayName becomes the moltgate subject,
// which the gateway's own logs and approvals then name as the actor instead of a label the
// client chose. Every other field is left as the client sent it.
func clientForGateway(raw json.RawMessage, subject string) (json.RawMessage, error) {
	var client map[string]json.RawMessage // exact keys, as the gateway reads them
	if err := json.Unmarshal(raw, &client); err != nil || client == nil {
		return raw, err
	}
	for key, internal := range map[string][]string{"id": internalClientIDs, "mode": internalClientModes} {
		var v string
		if json.Unmarshal(client[key], &v) == nil && slices.Contains(internal, strings.ToLower(strings.TrimSpace(v))) {
			client[key] = json.RawMessage(`"cli"`)
		}
	}
	if subject != "" {
		name, err := json.Marshal(subject)
		if err != nil {
			return nil, err
		}
		client["displayName"] = name
	}
	return json.Marshal(client)
}

// rewriteConnect sets the connect request's credentials and scopes: in token mode the
// gateway token goes into auth (the client never holds it); the client description names the
// moltgate subject and never one of the gateway's own processes (clientForGateway). The
// device proof is dropped and the scopes asked for are capped by what the caller's role
// allows, except for a browser of the gateway's own origin in token mode, whose proof the
// gateway needs and can still verify (keepsDeviceProof, reported as kept): its scopes stay
// as signed, capped by the upgrade's X-Openclaw-Scopes instead.
func (c *conn) rewriteConnect(f *frame) (out []byte, kept bool, err error) {
	if f.params == nil {
		f.params = map[string]json.RawMessage{}
	}
	kept = c.keepsDeviceProof(f)
	if !kept {
		// The client's device proof signs the challenge together with the credential it
		// sent, which moltgate replaces: the gateway would refuse it ("device signature
		// invalid"). moltgate identified the caller itself, so the socket goes on as a
		// device-less client.
		delete(f.params, "device")
	}
	if raw, ok := f.params["client"]; ok {
		client, err := clientForGateway(raw, c.s.Subject.ID)
		if err != nil {
			return nil, false, err
		}
		f.params["client"] = client
	}
	if kept {
		// auth.password carries the shared secret in token mode and is not signed.
		auth, err := json.Marshal(map[string]string{"password": string(c.s.Entry.Token)})
		if err != nil {
			return nil, false, err
		}
		f.params["auth"] = auth
		out, err = f.encode()
		return out, true, err
	}
	if c.s.Entry.AuthMode != "trusted-proxy" {
		auth, err := json.Marshal(map[string]string{"token": string(c.s.Entry.Token)})
		if err != nil {
			return nil, false, err
		}
		f.params["auth"] = auth
	} else {
		delete(f.params, "auth")
	}
	var asked []string
	if raw, ok := f.params["scopes"]; ok {
		if err := json.Unmarshal(raw, &asked); err != nil {
			return nil, false, err
		}
	} else {
		asked = c.s.Scopes
	}
	granted := make([]string, 0, len(asked))
	for _, s := range asked {
		if slices.Contains(c.s.Scopes, s) {
			granted = append(granted, s)
		}
	}
	scopes, _ := json.Marshal(granted)
	f.params["scopes"] = scopes
	out, err = f.encode()
	return out, false, err
}

// refresh extends the socket's life with a fresh session token of the same user.
func (c *conn) refresh(ctx context.Context, f *frame) bool {
	tok := f.str("token")
	if c.rl.deps.Sessions == nil || c.s.Subject.Kind != policies.SubjectUser || tok == "" {
		return c.reply(ctx, errorResponse(f.id, "INVALID_REQUEST", "moltgate: no session to refresh"))
	}
	id, err := c.rl.deps.Sessions.Verify(ctx, tok)
	if err != nil || id.UserID != c.s.Subject.ID {
		did := policies.NewDecisionID()
		c.auditDecision(audit.TypeAuthnFailure, "refresh_refused", RefreshMethod, did, nil)
		return c.reply(ctx, errorResponseWith(f.id, "UNAUTHORIZED", "moltgate: session token refused", refusalDetails{DecisionID: did}))
	}
	c.mu.Lock()
	c.expires = id.Expires
	if c.expiry != nil && !id.Expires.IsZero() {
		c.expiry.Reset(id.Expires.Sub(c.rl.deps.Now()))
	}
	c.mu.Unlock()
	return c.reply(ctx, okResponse(f.id, map[string]string{"expires": id.Expires.UTC().Format(time.RFC3339)}))
}

// recheck re-decides the socket as its upgrade was decided, against current policy and data.
func (c *conn) recheck(ctx context.Context) {
	c.mu.Lock()
	pending, in, tokenHash := c.s.Identify != nil, c.s.Input, c.tokenHash
	c.mu.Unlock()
	e, ok := c.rl.deps.Gateways.Lookup(c.s.Entry.ID)
	if !ok {
		c.audit(audit.TypePolicyDeny, "gateway_removed", "")
		c.end(closeRevoked, websocket.StatusPolicyViolation, "gateway removed")
		return
	}
	if pending {
		return // decided when its connect request identifies it
	}
	if tokenHash != nil && subtle.ConstantTimeCompare(tokenHash, e.TokenHash) != 1 {
		c.audit(audit.TypePolicyDeny, "token_changed", "")
		c.end(closeRevoked, websocket.StatusPolicyViolation, "gateway token changed")
		return
	}
	d, err := c.rl.deps.Policy.Decide(ctx, &in)
	switch {
	case err != nil:
		c.audit(audit.TypePolicyDeny, "policy_error", "")
		c.end(closePolicyErr, websocket.StatusPolicyViolation, "policy evaluation failed")
	case !d.Allow:
		c.audit(audit.TypePolicyDeny, d.Reason, "")
		c.end(closeRevoked, websocket.StatusPolicyViolation, "access revoked: "+d.Reason)
	}
}

func (c *conn) allowRate() bool {
	now := c.rl.deps.Now()
	c.tokens = min(float64(c.rl.cfg.Burst), c.tokens+now.Sub(c.refill).Seconds()*c.rl.cfg.MessagesPerSecond)
	c.refill = now
	if c.tokens < 1 {
		return false
	}
	c.tokens--
	return true
}

// audit records a refusal on this socket; the error says it could not be written (and was
// logged).
func (c *conn) audit(typ, reason, method string) error {
	return c.auditWith(typ, reason, method, nil)
}

// auditWith is audit with extra details.
func (c *conn) auditWith(typ, reason, method string, extra map[string]string) error {
	return c.auditDecision(typ, reason, method, "", extra)
}

// auditDecision is auditWith naming the decision refused (decision_id; empty: the event's own).
func (c *conn) auditDecision(typ, reason, method, decisionID string, extra map[string]string) error {
	c.mu.Lock()
	in := c.s.Input
	c.mu.Unlock()
	ev := audit.Event{Type: typ, Actor: audit.Actor{Kind: in.Subject.Kind, ID: in.Subject.ID}, Tenant: c.s.Entry.Tenant,
		Gateway: c.s.Entry.ID, Action: "ws.call", Outcome: "deny", Reason: reason, RequestID: c.s.RequestID,
		ClientIP: in.ClientIP, PolicyRevision: c.rl.deps.Policy.Revision(), Details: map[string]string{"protocol": "ws"}}
	if method != "" {
		ev.Details["method"] = method
	}
	for k, v := range extra {
		ev.Details[k] = v
	}
	if decisionID != "" {
		ev.Decision = &audit.Decision{DecisionID: decisionID}
	}
	err := c.rl.deps.Audit.Emit(context.Background(), ev)
	if err != nil {
		c.rl.deps.Logger.Error("wsrelay: audit emit failed", "request_id", c.s.RequestID, "err", err)
	}
	return err
}
