// Package wsrelay relays WebSockets between clients and OpenClaw gateways and decides every
// client message: the upgrade is decided by the proxy like any request, then each
// {"type":"req"} frame is decided by the policy engine as its own action before it is
// forwarded, and open sockets are re-decided whenever policy, membership, allowlists or tokens
// change. A socket that is no longer allowed is closed (1008), whatever it was allowed before.
//
// Invariants: no client frame reaches a gateway without an allow decision (connect included:
// it is allowed only as the first frame, after the upgrade was allowed); no gateway is
// dialled for a caller not yet identified and allowed (a socket that identifies in its
// connect request is answered by the relay until then, see identify.go); a denied frame gets
// a protocol-correct error response and is not forwarded; memory per socket is bounded (one
// message in flight per direction, size limits on both).
package wsrelay
