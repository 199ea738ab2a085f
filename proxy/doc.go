// Package proxy is moltgate's enforcement point: it routes a request to a tenant's gateway by
// Host, finds the client's address, identifies the caller, asks the policy engine, and either
// forwards the request with the gateway's upstream credentials or refuses it with a small JSON
// body, an audit event and a metric.
//
// Invariants: the proxy forwards only what a policy allowed; an error anywhere before the
// decision (bad credential, policy error, timeout) refuses; client credentials and spoofable
// forwarding headers never reach a gateway; the path the policy saw is the path the gateway
// gets.
package proxy
