// Prints the real gateway's operator scope for every core method, as JSON
// {method: [scope, ...]}, from OpenClaw's own method-scope table (dist/method-scopes-*.mjs;
// the bundle renames exports, so their aliases are read from its export clause).
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
const dist = join(process.argv[2], "node_modules/openclaw/dist");
const alias = (src, name) => src.match(new RegExp(`\\b${name} as (\\w+)`))?.[1];
for (const f of readdirSync(dist).filter((f) => /^method-scopes-.*\.mjs$/.test(f))) {
  const src = readFileSync(join(dist, f), "utf8");
  const list = alias(src, "listCoreGatewayMethodNames");
  const scope = alias(src, "resolveLeastPrivilegeOperatorScopesForMethod");
  if (!list || !scope) continue;
  const m = await import(join(dist, f));
  const out = {};
  for (const name of m[list]()) out[name] = m[scope](name, {});
  console.log(JSON.stringify(out));
  process.exit(0);
}
console.error("no method-scope table found in " + dist);
process.exit(1);
