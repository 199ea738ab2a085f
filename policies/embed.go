package policies

import (
	"embed"
	"io/fs"
)

// defaultSet is the default policy set: the Rego modules, their tests and the default roles.
//
//go:embed *.rego roles.json
var defaultSet embed.FS

// Default returns the embedded default policy set: *.rego (tests included) and roles.json.
// It is what an Engine loads when Config.Dir is empty, and what `moltgate policy test`
// tests without a directory.
func Default() fs.FS { return defaultSet }
