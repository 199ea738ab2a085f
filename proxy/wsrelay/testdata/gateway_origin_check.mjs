// Reads JSON lines {origin, requestHost, allowedOrigins, isLocalClient} on stdin and prints,
// for each, the pinned gateway's own verdict on a browser socket's Origin: checkBrowserOrigin
// from dist/origin-check-*.mjs, the check its WebSocket connect applies to the Control UI
// (checkGatewayWsBrowserOrigin). OPENCLAW_DIR is where node_modules/openclaw lives.
import { readdirSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { createInterface } from "node:readline";

const dist = path.join(process.env.OPENCLAW_DIR, "node_modules", "openclaw", "dist");
const files = readdirSync(dist).filter((f) => /^origin-check-.*\.mjs$/.test(f));
if (files.length !== 1) throw new Error(`want one origin-check module in ${dist}, found ${files}`);
// The bundle exports checkBrowserOrigin as "t".
const { t: checkBrowserOrigin } = await import(pathToFileURL(path.join(dist, files[0])).href);
if (typeof checkBrowserOrigin !== "function") throw new Error("checkBrowserOrigin not found");
for await (const line of createInterface({ input: process.stdin })) {
  const c = JSON.parse(line);
  console.log(JSON.stringify(checkBrowserOrigin({ ...c, allowHostHeaderOriginFallback: false })));
}
