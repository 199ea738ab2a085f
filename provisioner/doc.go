// Package provisioner gives a tenant a gateway with one call: it records the desired gateway
// (a Spec) in the store, and a reconciler brings the world to it step by step through a
// Driver (local OpenClaw processes; Fly Machines and Cloudflare next), then registers the
// gateway in the registry, so that moltgate routes to it with a token of its own.
//
// The plan of every gateway is the same list: the core's "token" step, the driver's steps
// in order, then the core's "register" and (when moltgate serves) "probe" steps. Destroy
// runs the same list backwards. Rotating the token is the same plan again with a new token:
// each step's Check finds what no longer matches, and its Ensure makes it match.
//
// Invariants:
//   - Each step is recorded in the store before it acts (pending) and after (done), as
//     Crossplane records an external create. A step found pending may have made its resource:
//     its Ensure resolves that by a lookup under the resource's deterministic name, never by
//     a second create. So a process may die anywhere, and the next pass, by any process,
//     finishes the job with exactly one of each resource.
//   - One process works on a gateway at a time: a pass holds the gateway's lease in the store
//     (compare-and-swap), refreshed while it runs; a pass that loses it stops without writing,
//     and every status write is itself a compare-and-swap against what the pass last read.
//   - Every step that changes something is an audit event (provision.step) before it counts
//     as done; a step whose event cannot be written is retried.
//   - The gateway token is generated here, stored only sealed by the keystore, and handed to
//     the driver and the registry; tenant provider keys are opened through a keystore.Opener
//     (each open audited) only while a step needs them, never stored or logged.
//   - Destroy removes what exists in reverse order, counting "not found" as done, and forgets
//     the gateway only when every step has confirmed its resource gone.
//   - An image upgrade (Upgrade, and UpgradeFleet's batches) is recorded in the gateway's
//     status, with the image to roll back to, and in its spec before the workload is touched,
//     under the gateway's lease; only an unhealthy workload fails it, and a failed batch of a
//     fleet upgrade is rolled back whole before the fleet halts.
package provisioner
