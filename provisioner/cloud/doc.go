// Package cloud is the provisioner's "fly" driver: each gateway is a Fly app whose machine,
// bound to loopback, is reached only through a Cloudflare tunnel, at a hostname guarded by
// an Access application that admits only moltgate's service token. It composes the
// provisioner/fly and provisioner/cloudflare drivers as provisioner steps, in this order:
//
//	cloudflare.tunnel → fly.app → fly.volume → fly.ips → fly.secrets → fly.machine →
//	cloudflare.dns → cloudflare.access
//
// The tunnel comes first because the machine needs its connector token (delivered as the
// app secret TUNNEL_TOKEN, beside the gateway token and the tenant's provider keys); the
// hostname and its Access application come last, once something answers behind them. The
// registry's upstream is the gateway's public hostname, https://<id>.<gateway domain>.
//
// Invariants:
//   - Every step is one of the two drivers' idempotent ensures, so a pass killed anywhere
//     and run again leaves exactly one of each resource; every Check only reads.
//   - A Check that finds what a step made changed behind moltgate's back (the machine's
//     image, the DNS record's target, the tunnel's ingress, a resource gone) reports it
//     with Run.Drift before the step runs again to repair it.
//   - Secrets (the gateway token, the tunnel token, the tenant's keys, the service token's
//     client secret) travel only in request bodies and the keystore; outputs hold ids.
//   - moltgate's Access service token is one for all gateways: its secret, which Cloudflare
//     shows once, is kept sealed by the keystore in the provisioner's store. A token whose
//     secret nobody holds is replaced. Destroying a gateway leaves it.
package cloud
