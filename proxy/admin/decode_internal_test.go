package admin

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/registry"
)

// Issue 15: keys match exactly and once, at every depth; encoding/json's own rules
// (unknown fields, trailing data, size) still hold.
func TestDecodeStrict(t *testing.T) {
	t.Parallel()
	type nested struct {
		Rules map[string]registry.SkillRules `json:"rules"`
		List  []AllowlistRequest             `json:"list"`
		Any   any                            `json:"any"`
		Skip  string                         `json:"-"`
		Plain string
	}
	for _, c := range []struct {
		name, body string
		ok         bool
	}{
		{"exact", `{"rules":{"a":{"allow":["x"]}},"list":[{"cidrs":[]}],"any":{"k":1},"Plain":"p"}`, true},
		{"map keys are data, not fields", `{"rules":{"A":{},"a":{}}}`, true},
		{"duplicate in a map value", `{"rules":{"a":{"allow":[],"allow":["x"]}}}`, false},
		{"duplicate map key", `{"rules":{"a":{},"a":{}}}`, false},
		{"case in a slice element", `{"list":[{"cidrs":[]},{"CIDRs":[]}]}`, false},
		{"duplicate inside any", `{"any":{"k":1,"k":2}}`, false},
		{"duplicate inside an array in any", `{"any":[{"k":1,"k":2}]}`, false},
		{"a field tagged -", `{"Skip":"s"}`, false},
		{"a field without a tag, in another case", `{"plain":"p"}`, false},
		{"too deep", `{"any":` + strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1) + `}`, false},
		{"not an object", `[]`, false},
		{"trailing data", `{} {}`, false},
		{"unterminated", `{"any":[`, false},
		{"oversized", `{"Plain":"` + strings.Repeat("a", maxBody) + `"}`, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var v nested
			err := decode(httptest.NewRequest("POST", "/", strings.NewReader(c.body)), &v)
			if (err == nil) != c.ok || (err != nil && !errors.Is(err, errBadBody)) {
				t.Errorf("got %v, want ok %v", err, c.ok)
			}
		})
	}
}
