package policies

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
)

// ErrMissingData is returned by New and Reload for a policy set whose rules read data that
// none of its data files define: such a rule would read undefined and could skip a refusal.
var ErrMissingData = errors.New("rules read data the set does not define")

// authzPackage is the package of the default rules. A directory without a module in it
// extends the embedded defaults instead of replacing them.
var authzPackage = ast.MustParseRef("data.moltgate.authz")

// loadSet loads the policy set in fsys (tests included when tests is true). A set without a
// module in package moltgate.authz is an extension: its modules and data files are loaded
// together with the embedded default set (not its tests), whose data documents it may not
// redefine.
func loadSet(fsys fs.FS, tests bool) (*loader.Result, error) {
	res, err := loadFS(fsys, tests)
	if err != nil {
		return nil, err
	}
	if fsys == Default() || replacesDefaults(res) {
		return res, nil
	}
	// The defaults' own tests and fixtures stay out: they pin the defaults alone, and an
	// extension changes what the merged decision is. The extension's tests run.
	def, err := loadFS(Default(), false)
	if err != nil {
		return nil, fmt.Errorf("embedded policies: %w", err)
	}
	for k := range res.Documents {
		if _, ok := def.Documents[k]; ok {
			return nil, fmt.Errorf("data files define data.%s, which the default set defines (a set that extends the defaults adds documents of its own)", k)
		}
	}
	maps.Copy(def.Documents, res.Documents)
	for name, m := range res.Modules {
		// Keyed and named apart from the defaults: the loader merges modules by name.
		m.Name = extensionPrefix + m.Name
		def.Modules[extensionPrefix+name] = m
	}
	return def, nil
}

// extensionPrefix names an extension's modules apart from the defaults'.
const extensionPrefix = "extension/"

// defaultDecisionQuery is the default rules' answer before the extension point's merge.
const defaultDecisionQuery = "data.moltgate.authz.default_decision"

var customPackage = ast.MustParseRef("data.moltgate.custom")

// decisionQuery is the query a compiled set is prepared with. When the set's moltgate.authz
// rules are the embedded ones (usesDefaults) and moltgate.custom has no rules, the merge in
// decision can only return default_decision: that is queried directly, so an absent or
// empty extension costs nothing per decision.
func decisionQuery(c *ast.Compiler, usesDefaults bool) string {
	if usesDefaults && len(c.GetRulesWithPrefix(customPackage)) == 0 {
		return defaultDecisionQuery
	}
	return DecisionQuery
}

// replacesDefaults reports whether the set defines rules of package moltgate.authz.
func replacesDefaults(res *loader.Result) bool {
	for _, m := range res.Modules {
		if m.Parsed.Package.Path.Equal(authzPackage) {
			return true
		}
	}
	return false
}

// checkDataRefs refuses a set whose rules (not its tests) read a data document that neither
// its data files nor the engine (data.gateways, ...) provide, nor a rule defines: a default
// rule reading an absent data.ws.owner_tools would skip the owner-tool refusal. Every missing
// document is named with the first place that reads it.
func checkDataRefs(c *ast.Compiler, docs map[string]any) error {
	missing := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(c.Modules)) {
		m := c.Modules[name]
		if strings.HasSuffix(name, "_test.rego") {
			continue
		}
		ast.WalkRefs(m, func(ref ast.Ref) bool {
			if !ref.HasPrefix(ast.DefaultRootRef) || len(ref) < 2 {
				return false
			}
			path := groundPath(ref)
			if len(path) == 0 || engineOwned(path[0]) || definedByRules(c, path) || inDocs(docs, path) {
				return false
			}
			key := "data." + strings.Join(path, ".")
			if _, seen := missing[key]; !seen {
				loc := name
				if ref[0].Location != nil {
					loc = fmt.Sprintf("%s:%d", ref[0].Location.File, ref[0].Location.Row)
				}
				missing[key] = loc
			}
			return false
		})
	}
	if len(missing) == 0 {
		return nil
	}
	errs := []error{ErrMissingData}
	for _, k := range slices.Sorted(maps.Keys(missing)) {
		errs = append(errs, fmt.Errorf("%s: read at %s, defined by no data file", k, missing[k]))
	}
	return errors.Join(errs...)
}

// groundPath is the leading run of string keys of a data reference, without "data".
func groundPath(ref ast.Ref) []string {
	var path []string
	for _, t := range ref[1:] {
		s, ok := t.Value.(ast.String)
		if !ok {
			break
		}
		path = append(path, string(s))
	}
	return path
}

func engineOwned(doc string) bool {
	return doc == dataGateways || doc == dataPlatformAdmins || doc == dataTenantKeys
}

// definedByRules: the path lies under a package of the set's rules, or of the extension
// point (data.moltgate.custom is read whether or not a module defines it: an absent
// extension is an empty one). Rules are the compiler's to check, data files this file's.
func definedByRules(c *ast.Compiler, path []string) bool {
	return path[0] == "moltgate" || c.RuleTree.Child(ast.String(path[0])) != nil
}

// inDocs: the path names a value of the data documents (a key below a non-object, such as
// an index into an array, counts as present).
func inDocs(docs map[string]any, path []string) bool {
	var v any = docs
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return true
		}
		if v, ok = m[k]; !ok {
			return false
		}
	}
	return true
}

// InputSchemaPath is the JSON schema of input (Input) in the embedded set: moltgate
// type-checks every set against it, and `opa eval -s policies/schemas/input.json` does the
// same for authors.
const InputSchemaPath = "schemas/input.json"

// inputSchema is the schema set that types input with the published schema.
func inputSchema() (*ast.SchemaSet, error) {
	b, err := fs.ReadFile(Default(), InputSchemaPath)
	if err != nil {
		return nil, fmt.Errorf("policies: input schema: %w", err)
	}
	var schema any
	if err := json.Unmarshal(b, &schema); err != nil {
		return nil, fmt.Errorf("policies: input schema: %w", err)
	}
	ss := ast.NewSchemaSet()
	ss.Put(ast.SchemaRootRef, schema)
	return ss, nil
}

// ErrTestsFailed is returned by New and Reload for a set whose own *_test.rego tests fail.
var ErrTestsFailed = errors.New("policy tests failed")

// gate runs the *_test.rego tests of the set in fsys (an extension's own, without the
// defaults'): a set goes live only if every one passes. A set without tests passes. The
// error names each failed test.
func gate(ctx context.Context, fsys fs.FS) error {
	results, err := RunTests(ctx, fsys)
	if errors.Is(err, ErrNoTests) {
		return nil
	}
	if err != nil {
		return err
	}
	var failed []string
	for _, r := range results {
		if r.Failed() {
			failed = append(failed, fmt.Sprintf("%s.%s (%s)", r.Package, r.Name, r.Location))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%w: %s", ErrTestsFailed, strings.Join(failed, ", "))
	}
	return nil
}
