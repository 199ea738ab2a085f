// Package flytest is a fake of the Fly.io Machines API (flaps) for tests: a real
// httptest.Server that speaks the paths and JSON shapes fly-go v0.5.0's flaps client uses,
// keeps its state in memory and injects faults on demand. Point the real client at it
// (a transport that rewrites the base URL, or FLY_FLAPS_BASE_URL in a test); never stub the
// SDK.
//
// What it models, per app:
//   - apps with global names: a name another organization holds answers 422 to a create
//     and 401 (configurable) to every other call;
//   - volumes (encrypted by default; names are not unique, as on Fly), listed with a
//     destroyed volume kept in "scheduling_destroy" state;
//   - IP assignments (v6, shared_v4 without a region, private_v6, v4);
//   - secrets set and unset in one call, each change minting a new version that a machine
//     launch or update may require with min_secrets_version;
//   - machines with unique names per app and the state machine
//     created → starting → started → stopping → stopped → destroying → destroyed, advanced
//     on the server's clock; wait answers 408 after its bound; a started machine is destroyed
//     only with kill=true;
//   - leases with a nonce in the fly-machine-lease-nonce header: a held lease refuses other
//     acquirers (409) and mutations without the nonce (409).
//
// Faults (Inject) are per route and consumed in order: 429 with Retry-After, an error before
// the effect, an error after it (the resource exists, the client sees a failure), a stall
// before or after the effect (until the client gives up), a name already taken, a lease
// already held. Counters (Counts, Calls) let a test assert "exactly one of each".
//
// It is not the Machines API: no images are pulled, no VMs run, no networking exists, and
// where the real API's exact wording is unknown the fake's error messages are its own.
package flytest
