package policies

import (
	"fmt"
	"io/fs"
	"maps"
	"path"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
)

// BuildBundle reads the policy set in fsys into an OPA bundle, as `opa build` would: every
// .rego file, its tests included (the gate runs them), at its path, and the data files
// merged into the bundle's data. Test fixtures (*_test.json, ...) stay out: a bundle's data
// is served, so a bundle's tests read their data with `with`. The manifest carries revision
// and, as roots, the packages and data documents the set defines, so the bundle claims
// only what it owns. The set is not checked here: New with Config.Dir does that.
func BuildBundle(fsys fs.FS, revision string) (bundle.Bundle, error) {
	withTests, err := loadFS(fsys, true)
	if err != nil {
		return bundle.Bundle{}, fmt.Errorf("policies: bundle: %w", err)
	}
	served, err := loadFS(fsys, false)
	if err != nil {
		return bundle.Bundle{}, fmt.Errorf("policies: bundle: %w", err)
	}
	b := bundle.Bundle{Data: served.Documents}
	if b.Data == nil {
		b.Data = map[string]any{}
	}
	var roots []string
	for _, name := range slices.Sorted(maps.Keys(withTests.Modules)) {
		m := withTests.Modules[name]
		p := "/" + strings.TrimPrefix(path.Clean("/"+name), "/")
		b.Modules = append(b.Modules, bundle.ModuleFile{URL: p, Path: p, Raw: m.Raw, Parsed: m.Parsed})
		pkg, err := m.Parsed.Package.Path.Ptr()
		if err != nil {
			return bundle.Bundle{}, fmt.Errorf("policies: bundle: %s: %w", name, err)
		}
		roots = append(roots, pkg)
	}
	if len(b.Modules) == 0 {
		return bundle.Bundle{}, fmt.Errorf("policies: bundle: no .rego files")
	}
	roots = append(roots, slices.Collect(maps.Keys(b.Data))...)
	b.Manifest = bundle.Manifest{Revision: revision, Roots: outermost(roots)}
	b.Manifest.SetRegoVersion(ast.RegoV1)
	return b, nil
}

// outermost sorts roots and drops those inside another (OPA refuses overlapping roots).
func outermost(roots []string) *[]string {
	slices.Sort(roots)
	out := []string{}
	for _, r := range slices.Compact(roots) {
		if len(out) == 0 || !bundle.RootPathsOverlap(out[len(out)-1], r) {
			out = append(out, r)
		}
	}
	return &out
}

// SignBundle signs b as `opa build --signing-key` does: a JWT over the hashes of its files
// in .signatures.json. key is a PEM private key (RS*, PS*, ES*), an HMAC secret (HS*), or
// the path of a file holding one; alg defaults to RS256; keyID, if set, names the key in the
// token (kid).
func SignBundle(b *bundle.Bundle, key, alg, keyID string) error {
	if err := b.GenerateSignature(bundle.NewSigningConfig(key, alg, ""), keyID, true); err != nil {
		return fmt.Errorf("policies: sign bundle: %w", err)
	}
	return nil
}
