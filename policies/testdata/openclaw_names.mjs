// Reads a JSON array of tool names on stdin and prints, as JSON, how the real gateway reads
// each one, with its own code (the bundle renames exports, so their aliases are read from its
// export clause):
//   aliases: the alias tables (TOOL_NAME_ALIASES and the scheduler's legacy names), name -> tool
//   names:   for each name, {run: the tool invokeGatewayTool runs (trimmed, the scheduler's
//            legacy names resolved), policy: the name its tool policy matches (normalizeToolPolicyName)}
//   ownerOnlyTools: GATEWAY_OWNER_ONLY_CORE_TOOLS, the tools it keeps for its owner
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
const dist = resolve(process.argv[2], "node_modules/openclaw/dist");
const alias = (src, name) => src.match(new RegExp(`\\b${name} as (\\w+)`))?.[1];

async function load(prefix, names) {
  for (const f of readdirSync(dist).filter((f) => f.startsWith(prefix + "-") && f.endsWith(".mjs"))) {
    const src = readFileSync(join(dist, f), "utf8");
    const as = names.map((n) => alias(src, n));
    if (as.some((a) => !a)) continue;
    const m = await import(pathToFileURL(join(dist, f)).href);
    return { src, fn: Object.fromEntries(names.map((n, i) => [n, m[as[i]]])) };
  }
  console.error(`no ${prefix}-*.mjs exporting ${names} in ${dist}`);
  process.exit(1);
}
const table = (src, re) => {
  const m = src.match(re);
  if (!m) {
    console.error(`no table matching ${re}`);
    process.exit(1);
  }
  return JSON.parse(m[1]);
};

const policy = await load("tool-policy-shared", ["normalizeToolPolicyName"]);
const dangerous = await load("dangerous-tools", ["GATEWAY_OWNER_ONLY_CORE_TOOLS"]);
const sched = await load("automations-tool-name", ["isAutomationsToolName", "AUTOMATIONS_TOOL_NAME"]);
const aliases = Object.fromEntries(table(policy.src, /TOOL_NAME_ALIASES = [^\n]*new Map\((\[[\s\S]*?\])\);/));
for (const legacy of table(sched.src, /LEGACY_AUTOMATIONS_TOOL_NAMES = (\[[^\]]*\])/)) {
  aliases[legacy] = sched.fn.AUTOMATIONS_TOOL_NAME;
}
const names = JSON.parse(readFileSync(0, "utf8")).map((name) => {
  const trimmed = name.trim();
  const run = sched.fn.isAutomationsToolName(trimmed) ? sched.fn.AUTOMATIONS_TOOL_NAME : trimmed;
  return { run, policy: policy.fn.normalizeToolPolicyName(name) };
});
console.log(JSON.stringify({ aliases, names, ownerOnlyTools: dangerous.fn.GATEWAY_OWNER_ONLY_CORE_TOOLS }));
