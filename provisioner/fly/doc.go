// Package fly is the provisioner's Fly.io driver: one Fly app per gateway, holding an
// encrypted volume, a dedicated IPv6 and a shared IPv4, the gateway's secrets, and one
// machine running the gateway image pinned by digest, bound to loopback (the Cloudflare
// tunnel inside the VM is its only way in). It speaks only the Machines API, through
// fly-go v0.5.0's flaps client; it never uses the GraphQL client.
//
// Invariants:
//   - Every operation is an idempotent ensure keyed by names derived from the gateway id
//     (app AppPrefix+id, volume "gateway_data", machine "gateway"): it looks up, creates
//     what is missing, adopts what is there. Running it twice, or again after a crash,
//     leaves one of each.
//   - A create is never repeated blindly. A create answered 5xx, or not at all, may have
//     happened: it is resolved by a lookup (ErrUnknownResult when the lookup finds
//     nothing). The SDK's own retry of 502 and 503, which covers creates, is stopped for
//     POSTs. Reads, deletes, secret sets and machine updates are repeated in place; a 429
//     is waited out for its Retry-After, for any call.
//   - An app name another organization holds is ErrNameTaken and never touched, not even
//     by Destroy. AppNameAvailable, which panics on a taken name in v0.5.0, is never called.
//   - A machine is changed only under its lease (fly-machine-lease-nonce), refreshed while
//     the driver works; a launch takes its lease at creation.
//   - Secrets travel only in request bodies. The flaps client gets no Logger (its logging
//     transport writes bodies), errors of secrets calls keep the status only, and the
//     driver's log carries names and counts, never values.
//
// Destroy removes the resources in reverse order, counting 404 as done, and returns nil only
// once the app is confirmed gone.
//
// Not done here: serializing work on one gateway across moltgate processes (the
// provisioner core's store lease), and deciding when to roll an upgrade back (the caller
// gets the previous image from UpgradeMachine).
package fly
