// The machine's health check (machine.json "checks"): GET /healthz is 200 while the
// gateway's GET /readyz on loopback and cloudflared's GET /ready both answer 200, else 503.
// It is the only listener beyond loopback, reachable on the machine's private network only
// (the machine declares no services), and it forwards nothing: no request reaches the
// gateway through it.
import { createServer } from "node:http";

const gateway = `http://127.0.0.1:${process.env.OPENCLAW_GATEWAY_PORT}/readyz`;
const tunnel = "http://127.0.0.1:20241/ready";
const port = Number(process.env.MOLTGATE_HEALTH_PORT);

async function ok(url) {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    await res.body?.cancel();
    return res.status === 200;
  } catch {
    return false;
  }
}

createServer(async (req, res) => {
  if (req.method !== "GET" || req.url !== "/healthz") {
    res.writeHead(404).end();
    return;
  }
  const [g, t] = await Promise.all([ok(gateway), ok(tunnel)]);
  res.writeHead(g && t ? 200 : 503, { "content-type": "text/plain" });
  res.end(`gateway ${g ? "ready" : "not ready"}, tunnel ${t ? "ready" : "not ready"}\n`);
}).listen(port, "::");
