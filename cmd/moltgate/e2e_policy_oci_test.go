package main_test

import (
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/policies/bundletest"
)

// Issue 12: the built binary takes its policy set from a bundle in an OCI registry (an
// in-process registry over TLS, trusted through SSL_CERT_FILE, with a password from the
// environment): a signed bundle goes live and shows in /readyz, a new push to the tag is
// picked up, an unsigned one is refused, and a registry that fails leaves moltgate ready.
func TestPolicyBundleOCIEndToEnd(t *testing.T) {
	t.Parallel()
	priv, pub, err := bundletest.KeyPair()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile, caFile := filepath.Join(dir, "bundle.pub"), filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(keyFile, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	reg := bundletest.NewRegistry("ci", "pa55")
	t.Cleanup(reg.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: reg.Certificate().Raw})
	if err := os.WriteFile(caFile, ca, 0o600); err != nil {
		t.Fatal(err)
	}
	push := func(rev string, key []byte) {
		t.Helper()
		fsys := fstest.MapFS{}
		for name, body := range sourceVersion("", rev) {
			fsys[name] = &fstest.MapFile{Data: []byte(body)}
		}
		b, err := policies.BuildBundle(fsys, rev)
		if err != nil {
			t.Fatal(err)
		}
		if key != nil {
			if err := policies.SignBundle(&b, string(key), "ES256", ""); err != nil {
				t.Fatal(err)
			}
		}
		body, err := bundletest.Encode(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := reg.Push(t.Context(), "org/policies:live", body, ocispec.MediaTypeImageLayerGzip); err != nil {
			t.Fatal(err)
		}
	}
	push("v1", priv)
	mg := startBinary(t, binary, []string{"SSL_CERT_FILE=" + caFile, "MOLTGATE_TEST_REGISTRY_PASSWORD=pa55"}, fmt.Sprintf(`
listen: @LISTEN@
admin_listen: @ADMIN@
data_dir: @DATA@
admin_token: {file: @ADMINTOKEN@}
policies:
  bundle:
    url: oci://%s/org/policies:live
    username: ci
    password: {env: MOLTGATE_TEST_REGISTRY_PASSWORD}
    poll_interval: 50ms
    verification_key: {file: %s}
    algorithm: ES256
`, reg.Host(), keyFile))
	if r := readyzOf(mg); !strings.Contains(r, `policy bundle revision "v1" from oci://`+reg.Host()+`/org/policies:live`) {
		t.Fatalf("/readyz at start: %s, want the v1 bundle from the registry", r)
	}
	push("v2", priv)
	waitUntil(t, "v2 live", func() bool { return strings.Contains(readyzOf(mg), `policy bundle revision "v2"`) })

	refused := func() float64 {
		v, _ := strconv.ParseFloat(metricValue(t, mg, `moltgate_policy_reloads_total{result="refused"}`), 64)
		return v
	}
	before := refused()
	push("unsigned", nil)
	waitUntil(t, "unsigned bundle refused", func() bool { return refused() > before })
	if r := readyzOf(mg); !strings.HasPrefix(r, "200 ") || !strings.Contains(r, `policy bundle revision "v2"`) {
		t.Errorf("/readyz after an unsigned push: %s, want 200 and v2 in force", r)
	}

	reg.Fail(http.StatusServiceUnavailable)
	waitUntil(t, "poll failure shown", func() bool { return strings.Contains(readyzOf(mg), "policy bundle poll failed") })
	if r := readyzOf(mg); !strings.HasPrefix(r, "200 ") || strings.Contains(r, "pa55") {
		t.Errorf("/readyz with the registry down: %s, want 200 and no password", r)
	}
}
