// Package cloudflare is the provisioner's Cloudflare driver: for each gateway, a remotely
// managed Cloudflare Tunnel whose ingress sends the gateway's hostname (<id>.GatewayDomain)
// to the gateway on loopback and everything else to a 404, a proxied CNAME of the hostname
// to the tunnel, and an Access application on the hostname whose only policy admits one
// service token (moltgate's), so that only moltgate reaches a gateway. It speaks API v4
// through cloudflare-go v7.9.0's zero_trust and dns services.
//
// Invariants:
//   - Every operation is an idempotent ensure keyed by names derived from the gateway id
//     (tunnel, Access application and Access policy NamePrefix+id; hostname
//     id.GatewayDomain): it looks up, creates what is missing, adopts what is there.
//     Running it twice, or again after a crash, leaves one of each.
//   - A create is never repeated blindly. The SDK's retries are off (they repeat POSTs
//     after a 5xx or a timeout); a create answered 5xx, or not at all, may have happened
//     and is resolved by a lookup (ErrUnknownResult when the lookup finds nothing). Reads,
//     overwrites and deletes are repeated in place; a 429 is waited out for its
//     Retry-After, for any call; a client-side limiter keeps the token under Cloudflare's
//     1,200 requests per 5 minutes.
//   - What the driver did not make is not changed: a DNS record is repointed or deleted
//     only if it carries the driver's comment (or points at the gateway's tunnel); an
//     Access application is changed or deleted only if it has the driver's name; anything
//     else on the hostname is a *DriftError (ErrDrift).
//   - Secrets (the API token, the tunnel token, a service token's client secret) never
//     reach a log or an error: errors keep the status and the API's error codes only,
//     never the SDK's text (it holds the URL and the raw answer), and the secrets travel as
//     keystore.Secret, which prints redacted.
//   - CLOUDFLARE_* environment variables are never read: the services are built from
//     explicit options, not by cloudflare.NewClient (which would also link the SDK's
//     120-odd service packages).
//
// Destroy removes the resources in reverse order, counting 404 as done. Service tokens,
// which may admit moltgate to many gateways, are removed only by DeleteServiceToken.
//
// Not done here: serializing work on one gateway across moltgate processes (the
// provisioner core's store lease), running cloudflared (the gateway's host does, with
// TunnelToken), and deleting a tunnel that still has connections (stop the connector
// first).
package cloudflare
