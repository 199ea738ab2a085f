package policies

import (
	"embed"
	"io/fs"
)

// defaultSet is the default policy set: the Rego modules, the default roles, and the
// Rego tests with their fixture data.
//
//go:embed *.rego roles.json ws.json http.json fixtures_test.json schemas/input.json
var defaultSet embed.FS

// Default returns the embedded default policy set: *.rego, roles.json, ws.json and http.json, plus the Rego
// tests and their fixtures (*_test.rego, fixtures_test.json), which the engine skips.
// It is what an Engine loads when Config.Dir is empty, and what `moltgate policy test`
// tests without a directory.
func Default() fs.FS { return defaultSet }
