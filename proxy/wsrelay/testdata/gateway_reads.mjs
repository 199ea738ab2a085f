// Reads base64 WebSocket text messages, one per line on stdin, and prints for each, as one
// JSON line, what the gateway reads from it: it decodes the bytes as UTF-8 and calls
// JSON.parse (rawDataToString, then JSON.parse, in the gateway's message handler). Strings
// are made well-formed (a lone surrogate becomes U+FFFD, as Go's decoder reads it); a name
// holding a lone surrogate can never equal a real tool's.
import { createInterface } from "node:readline";
const keys = ["name", "tool", "toolName", "skillKey", "slug"];
const str = (v) => (typeof v === "string" ? v.toWellFormed() : null);
for await (const line of createInterface({ input: process.stdin })) {
  let out;
  try {
    const m = JSON.parse(Buffer.from(line, "base64").toString("utf8"));
    const p = m !== null && typeof m === "object" && m.params !== null && typeof m.params === "object" ? m.params : {};
    out = { ok: true, type: str(m?.type), method: str(m?.method), params: Object.fromEntries(keys.map((k) => [k, str(p[k])])) };
  } catch {
    out = { ok: false };
  }
  console.log(JSON.stringify(out));
}
