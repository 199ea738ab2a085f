// A real OpenClaw client (openclaw-node, as an application would use it) driven by
// e2e_ws_test.go through moltgate. It prints one JSON object per line: each step's outcome,
// and at the end how the socket closed.
//
// Environment: MG_URL (ws://<gateway-id>.gw.localhost:port/), MG_TOKEN (the caller's Clerk
// session JWT, sent as the connect request's auth.token), MG_MODE ("session": connect, list
// sessions, chat, a forbidden call, list again, disconnect; "hold": connect and wait until the
// socket is closed), MG_FORBIDDEN (the method the role forbids), OPENCLAW_DIR (where
// node_modules/openclaw-node lives).
import dns from "node:dns";
import { createRequire } from "node:module";
import path from "node:path";

// Node does not resolve *.localhost to loopback (Go and browsers do); moltgate routes by
// Host, so name the gateway in the URL and resolve it here.
const lookup = dns.lookup;
dns.lookup = function (host, opts, cb) {
  if (typeof opts === "function") {
    cb = opts;
    opts = {};
  }
  if (/(^|\.)localhost\.?$/i.test(host)) {
    if (opts && opts.all) return process.nextTick(cb, null, [{ address: "127.0.0.1", family: 4 }]);
    return process.nextTick(cb, null, "127.0.0.1", 4);
  }
  return lookup.call(dns, host, opts, cb);
};

// Every socket's close code and reason, which openclaw-node does not report.
let lastClose = null;
const closeWaiters = [];
globalThis.WebSocket = class extends globalThis.WebSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("close", (e) => {
      lastClose = { code: e.code, reason: e.reason };
      closeWaiters.splice(0).forEach((w) => w(lastClose));
    });
  }
};

const require = createRequire(path.join(process.env.OPENCLAW_DIR, "package.json"));
const { OpenClawClient } = require("openclaw-node");

const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");

const client = new OpenClawClient({
  url: process.env.MG_URL,
  token: process.env.MG_TOKEN,
  autoReconnect: false,
  clientId: "gateway-client",
  scopes: ["operator.read", "operator.write"],
});
const errors = new Map(); // request id -> error of a refused request
client.on("protocol:response", (res) => {
  if (!res.ok) errors.set(res.id, res.error);
});
client.on("error", () => {}); // reported through the steps and the close

function closed() {
  return new Promise((resolve) => (lastClose ? resolve(lastClose) : closeWaiters.push(resolve)));
}

async function call(method, params) {
  const before = new Set(errors.keys());
  try {
    const res = await client.request(method, params);
    return { ok: true, payload: res.payload };
  } catch (err) {
    const fresh = [...errors.keys()].filter((k) => !before.has(k));
    return { ok: false, error: fresh.length ? errors.get(fresh[fresh.length - 1]) : { message: String(err.message) } };
  }
}

try {
  const hello = await client.connect();
  const bye = closed();
  out({ step: "connect", ok: true, methods: (hello.features?.methods ?? []).length });
  if (process.env.MG_MODE === "hold") {
    out({ step: "ready" });
    const c = await bye;
    out({ step: "closed", ...c });
    process.exit(0);
  }
  const list = await call("sessions.list", {});
  out({ step: "sessions.list", ok: list.ok, sessions: Array.isArray(list.payload?.sessions), error: list.error });

  let text = "";
  const chatErrors = [];
  for await (const chunk of client.chat("say hello through moltgate", { sessionKey: "agent:main:moltgate-e2e-ws" })) {
    if (chunk.type === "text") text += chunk.text;
    if (chunk.type === "error") chatErrors.push(chunk.text);
  }
  out({ step: "chat", text, errors: chatErrors });

  // A control the gateway keeps for its own backend client: this client (openclaw-node, which
  // says it is gateway-client/backend) reaches the gateway as a CLI client, so it is refused.
  const hidden = await call("agent", { message: "hello", idempotencyKey: "mg-e2e-" + Date.now(), suppressPromptPersistence: true });
  out({ step: "backend-control", ok: hidden.ok, message: hidden.error?.message });

  const denied = await call(process.env.MG_FORBIDDEN, {});
  out({ step: "forbidden", ok: denied.ok, code: denied.error?.code, message: denied.error?.message });

  const again = await call("sessions.list", {});
  out({ step: "after", ok: again.ok, sessions: Array.isArray(again.payload?.sessions), error: again.error });

  await client.disconnect();
  out({ step: "closed", ...(await bye) });
} catch (err) {
  out({ step: "failed", error: String(err && err.message ? err.message : err), close: lastClose });
  process.exit(1);
}
process.exit(0);
