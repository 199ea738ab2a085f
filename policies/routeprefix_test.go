package policies

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/registry"
)

// Issue 13: the default rules match the lower-cased route against the prefixes as written,
// so a set with a prefix that is not a lower-case string is refused at load (a capital
// letter would silently open the route it names), and a reload to one keeps the old set.
func TestRoutePrefixesMustBeLowerCase(t *testing.T) {
	t.Parallel()
	orig, err := fs.ReadFile(Default(), "http.json")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, old, new, want string
	}{
		{"admin prefix", `"/v1/responses"`, `"/V1/Responses"`, `data.http.admin_prefixes[5]: "/V1/Responses", want a lower-case string`},
		{"owner prefix", `"/api/v1/admin/rpc"`, `"/api/v1/Admin/rpc"`, `data.http.owner_prefixes[0]: "/api/v1/Admin/rpc"`},
		{"not a string", `"/v1/responses"`, `5`, `data.http.admin_prefixes[5]: 5`},
		{"not a list", `"owner_prefixes": [
      "/api/v1/admin/rpc"
    ]`, `"owner_prefixes": "/api/v1/admin/rpc"`, `data.http.owner_prefixes: string, want a list`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if !strings.Contains(string(orig), tt.old) {
				t.Fatalf("http.json has no %s", tt.old)
			}
			bad := strings.Replace(string(orig), tt.old, tt.new, 1)
			_, err := New(t.Context(), Config{Dir: writeSet(t, true, nil, map[string]string{"http.json": bad})}, nil, nil)
			if !errors.Is(err, ErrRoutePrefix) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want ErrRoutePrefix naming %s", err, tt.want)
			}
		})
	}

	t.Run("reload keeps the old set", func(t *testing.T) {
		t.Parallel()
		dir := writeSet(t, true, nil, nil)
		e, err := New(t.Context(), Config{Dir: dir}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = e.SetGateways(t.Context(), []registry.Gateway{{ID: "gw1", Owner: "o", AuthMode: registry.AuthToken,
			Members: map[string]string{"op": registry.RoleOperator}}})
		if err != nil {
			t.Fatal(err)
		}
		in := Input{Subject: Subject{Kind: SubjectUser, ID: "op"}, Gateway: GatewayRef{ID: "gw1"}, Protocol: ProtocolHTTP,
			Action: "http.write", Request: Request{Method: "POST", Path: "/V1/Responses", Host: "gw1"}}
		rev := e.Revision()
		bad := strings.Replace(string(orig), `"/v1/responses"`, `"/V1/Responses"`, 1)
		if err := os.WriteFile(filepath.Join(dir, "http.json"), []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := e.Reload(t.Context()); !errors.Is(err, ErrRoutePrefix) {
			t.Fatalf("reload: got %v, want ErrRoutePrefix", err)
		}
		if e.Revision() != rev {
			t.Errorf("revision: got %s, want %s (the old set)", e.Revision(), rev)
		}
		d, err := e.Decide(t.Context(), &in)
		if err != nil || d.Allow || d.Reason != "role_forbids" {
			t.Errorf("operator on /V1/Responses: got %+v (%v), want role_forbids", d, err)
		}
	})
}
