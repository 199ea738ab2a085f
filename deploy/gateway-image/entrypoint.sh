#!/bin/bash
# moltgate-gateway: the tenant VM's entrypoint. It writes the gateway's configuration from
# the environment (the token and keys are Fly app secrets), then runs three processes and
# ends when any of them does, so Fly's restart policy restarts the machine whole:
#   - the OpenClaw gateway, on loopback only;
#   - cloudflared, the tunnel that is the gateway's only way in;
#   - healthz.mjs, the machine's health check: GET /healthz answers 200 only while the
#     gateway's /readyz and the tunnel's /ready both do, and it serves nothing else.
set -euo pipefail

die() { echo "moltgate-gateway: $*" >&2; exit 64; }

[ -n "${OPENCLAW_GATEWAY_TOKEN:-}" ] || die "OPENCLAW_GATEWAY_TOKEN is not set (the gateway token app secret)"
[ -n "${TUNNEL_TOKEN:-}" ] || die "TUNNEL_TOKEN is not set (the Cloudflare tunnel token app secret)"
# The tunnel is the only way in: a gateway on any other address would be a way around it.
[ "${OPENCLAW_GATEWAY_BIND:-}" = loopback ] || die "OPENCLAW_GATEWAY_BIND=${OPENCLAW_GATEWAY_BIND:-}: the gateway binds loopback only"
port="${OPENCLAW_GATEWAY_PORT:?}"
state="${OPENCLAW_STATE_DIR:?}"

umask 077
mkdir -p "$state" || die "$state is not writable by $(id -u): the volume's root must belong to it"
export OPENCLAW_CONFIG_PATH="$state/openclaw.json"
# The token goes through node's JSON encoder from the environment: never on a command line,
# never unescaped. The file is rewritten at every start, so a new secret takes effect.
node --input-type=module -e '
import { writeFileSync, renameSync } from "node:fs";
const path = process.env.OPENCLAW_CONFIG_PATH;
const config = {
  gateway: {
    mode: "local",
    port: Number(process.env.OPENCLAW_GATEWAY_PORT),
    bind: "loopback",
    auth: { mode: "token", token: process.env.OPENCLAW_GATEWAY_TOKEN },
    trustedProxies: ["127.0.0.1"],
  },
  update: { checkOnStart: false },
};
writeFileSync(path + ".tmp", JSON.stringify(config, null, 2), { mode: 0o600 });
renameSync(path + ".tmp", path);
'

pids=()
stop() { kill -TERM "${pids[@]}" 2>/dev/null || true; }
trap stop TERM INT

openclaw gateway run --port "$port" &
pids+=($!)
# cloudflared reads TUNNEL_TOKEN from the environment; its metrics (and /ready) stay on
# loopback too.
cloudflared tunnel --no-autoupdate --metrics 127.0.0.1:20241 run &
pids+=($!)
node /usr/local/lib/moltgate/healthz.mjs &
pids+=($!)

set +e
wait -n "${pids[@]}"
status=$?
stop
wait
exit "$status"
