package policies

import (
	"strings"
	"unicode"
)

// toolAliases are the OpenClaw gateway's alternative tool names, each mapped to the tool it
// runs: TOOL_NAME_ALIASES in its tool policy (src/agents/tool-policy-shared.ts) and the
// legacy scheduler names (src/agents/tools/automations-tool-name.ts). A deny of "exec" must
// also refuse "bash". TestCanonicalNamesMatchTheGateway reads both tables from the pinned
// gateway's own code and fails when they change.
var toolAliases = map[string]string{
	"bash":        "exec",
	"apply-patch": "apply_patch",
	"cron":        "automations",
}

// CanonicalName returns the name under which an OpenClaw gateway resolves a tool or skill
// name, so that policies compare what the gateway will run and not how a client spelled it:
// white space trimmed from both ends (every character JavaScript's trim removes, which the
// gateway applies, and every one Go counts as space), lower-cased, and an alias replaced by
// the tool it names. The gateway matches names exactly after trimming, so folding case can
// only make a deny list bind more requests, never fewer.
func CanonicalName(name string) string {
	name = strings.ToLower(strings.TrimFunc(name, isTrimmed))
	if to, ok := toolAliases[name]; ok {
		return to
	}
	return name
}

// isTrimmed reports whether JavaScript's String.prototype.trim or Go's unicode.IsSpace
// treats r as white space: the union is U+FEFF (JavaScript only) plus unicode.IsSpace.
func isTrimmed(r rune) bool { return r == '\uFEFF' || unicode.IsSpace(r) }
