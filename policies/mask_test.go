package policies

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// Each case exercises one rule of MaskInput: without that rule, its secret is left in.
func TestMaskInput(t *testing.T) {
	hex64 := strings.Repeat("0123456789abcdef", 4)
	plain := func() map[string]any {
		return map[string]any{
			"subject":  map[string]any{"kind": "user", "id": "user_2b5c8d6e9f0a1b2c3d4e5f6a7b8c9d0e", "session_id": "sess_1"},
			"gateway":  map[string]any{"id": "gw1", "tenant": "t1"},
			"request":  map[string]any{"method": "GET", "path": "/chat", "host": "gw1.gw.example.test"},
			"protocol": "http", "action": "http.read", "client_ip": "203.0.113.7",
		}
	}
	with := func(path []string, v any) map[string]any {
		doc := plain()
		m := doc
		for _, k := range path[:len(path)-1] {
			next, ok := m[k].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[k] = next
			}
			m = next
		}
		m[path[len(path)-1]] = v
		return doc
	}
	for _, c := range []struct {
		name   string
		doc    map[string]any
		secret string
		erased []string
	}{
		{"channels of a config write", with([]string{"ws", "channels"}, map[string]any{
			"telegram": map[string]any{"allowFrom": []any{"1"}, "dmPolicy": "open-xyz"}}), "open-xyz", []string{"/input/ws/channels"}},
		{"a key named like a credential", with([]string{"subject", "botToken"}, "123:abc"), "123:abc", []string{"/input/subject/botToken"}},
		{"a credential key at depth", with([]string{"ws", "params", "auth", "api_key"}, "k-1"), "k-1", []string{"/input/ws/params/auth/api_key"}},
		{"a credential key in a list", with([]string{"ws", "accounts"}, []any{map[string]any{"password": "pw-1"}}), "pw-1", []string{"/input/ws/accounts"}},
		{"a token in the path", with([]string{"request", "path"}, "/files/"+hex64), hex64, []string{"/input/request/path"}},
		{"an authorization scheme", with([]string{"request", "tool"}, "Bearer abc.def"), "abc.def", []string{"/input/request/tool"}},
		{"a JWT in a list", with([]string{"ws", "args"}, []any{"x", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-1"}), "sig-1", []string{"/input/ws/args"}},
		{"a query", with([]string{"request", "path"}, "/launch?code=abc"), "code=abc", []string{"/input/request/path"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := toJSON(t, c.doc)
			got, erased := MaskInput(c.doc)
			if s := toJSON(t, got); strings.Contains(s, c.secret) {
				t.Errorf("masked input %s still holds %q", s, c.secret)
			}
			if !slices.Equal(erased, c.erased) {
				t.Errorf("erased: got %v, want %v", erased, c.erased)
			}
			if toJSON(t, c.doc) != before {
				t.Error("MaskInput changed its argument")
			}
			// Nothing else is lost: putting back what was erased gives the input.
			for _, p := range c.erased {
				parts := strings.Split(p[len("/input/"):], "/")
				src, dst := c.doc, got
				for _, k := range parts[:len(parts)-1] {
					src, dst = src[k].(map[string]any), dst[k].(map[string]any)
				}
				dst[parts[len(parts)-1]] = src[parts[len(parts)-1]]
			}
			if !reflect.DeepEqual(got, c.doc) {
				t.Errorf("masked input lost more than it erased: %s, want %s", toJSON(t, got), before)
			}
		})
	}
	got, erased := MaskInput(plain())
	if erased != nil || !reflect.DeepEqual(got, plain()) {
		t.Errorf("an input without a credential: got %s, erased %v; want it whole", toJSON(t, got), erased)
	}
}
