package policies

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/format"
)

// Format formats every .rego file below dir as `opa fmt` does (Rego v1) and returns the
// files whose source differed. With write, it rewrites them in place; without, it changes
// nothing (`opa fmt --list`). A file that does not parse is an error naming it.
func Format(dir string, write bool) ([]string, error) {
	var changed []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(p, ".rego") {
			return nil
		}
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out, err := format.SourceWithOpts(p, src, format.Opts{RegoVersion: ast.RegoV1})
		if err != nil {
			return fmt.Errorf("policies: fmt %s: %w", p, err)
		}
		if bytes.Equal(src, out) {
			return nil
		}
		changed = append(changed, p)
		if write {
			return os.WriteFile(p, out, 0o644)
		}
		return nil
	})
	return changed, err
}
