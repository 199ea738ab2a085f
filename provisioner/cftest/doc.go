// Package cftest is a fake of the Cloudflare API v4 for tests: a real httptest.Server that
// speaks the paths, JSON shapes and envelopes cloudflare-go v7.9.0 uses for Cloudflare
// Tunnel, DNS records and Zero Trust Access, keeps its state in memory and injects faults
// on demand. Point the real SDK at it with option.WithBaseURL(fake.URL+"/client/v4/");
// never stub the SDK.
//
// What it models, for one account and one zone:
//   - remotely managed tunnels (cfd_tunnel): names unique among live tunnels (409, code
//     1013), a deleted tunnel kept with deleted_at and listed unless is_deleted=false, its
//     configuration (ingress, versioned, null until first set) and its connector token;
//   - DNS records: one CNAME per name, refused beside any other record of that name (400,
//     code 81053) and an identical record refused (400, code 81057); name.exact, type and
//     content filters;
//   - Access service tokens (the client secret is in the create answer only), reusable
//     Access policies, and self-hosted Access applications (one per domain) that link
//     policies by id;
//   - the v4 envelope {"success","errors":[{"code","message"}],"messages","result",
//     "result_info"} on every answer, and page/per_page pagination whose page past the end
//     is empty (cloudflare-go's auto-pager stops only on an empty page).
//
// Faults (Inject) are per route and consumed in order: 429 with Retry-After, an error
// before the effect, an error after it (the resource exists, the client sees a failure), a
// stall before or after the effect (until the client gives up), a name already taken (1013,
// 81053 or 81057) and a hostname already routed to another tunnel (1033). Counters (Counts,
// Calls) let a test assert "exactly one of each".
//
// It is not Cloudflare: nothing is routed, no connector runs, tunnels never have
// connections, and where the real API's exact wording or status is unknown the fake's are
// its own (documented at each route).
package cftest
