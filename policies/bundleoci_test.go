package policies

import (
	"bytes"
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/bundle"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moltgate/moltgate/policies/bundletest"
	"github.com/moltgate/moltgate/registry"
)

// Issue 12: a bundle pushed to an OCI registry (go-containerregistry's registry, in process)
// is a policy source. A signed bundle goes live; a new push to the tag is picked up; a
// tampered, unsigned, foreign-signed or too large bundle, or an artifact with no bundle layer,
// is refused and the set in force keeps deciding; an unchanged manifest digest downloads
// nothing; a registry that fails keeps the set in force and shows until it answers again.
func TestBundleSourceOCI(t *testing.T) {
	t.Parallel()
	priv, pub, err := bundletest.KeyPair()
	if err != nil {
		t.Fatal(err)
	}
	otherPriv, _, err := bundletest.KeyPair()
	if err != nil {
		t.Fatal(err)
	}
	reg := bundletest.NewRegistry("ci", "pa55")
	t.Cleanup(reg.Close)
	push := func(body []byte, layerType string) {
		t.Helper()
		if err := reg.Push(t.Context(), "org/policies:live", body, layerType); err != nil {
			t.Fatal(err)
		}
	}
	push(encode(t, customBundle(t, "first", "v1", ""), priv), ocispec.MediaTypeImageLayerGzip)

	metrics := prometheus.NewRegistry()
	e, reason := startBundleEngine(t, &BundleConfig{URL: "oci://" + reg.Host() + "/org/policies:live", PollInterval: 5e6,
		VerificationKey: pub, Algorithm: "ES256", MaxBytes: 64 << 10, Username: "ci", Password: []byte("pa55"), Client: reg.Client()}, metrics)

	results, next := pollBundles(t, e)
	good, tamperedBody := signedAndTampered(t, priv)
	refused := []struct {
		name      string
		body      []byte
		layerType string
		want      string
	}{
		{"tampered", tamperedBody, ocispec.MediaTypeImageLayerGzip, "digest mismatch"},
		{"unsigned", encode(t, customBundle(t, "unsigned", "v3", ""), nil), ocispec.MediaTypeImageLayerGzip, "missing .signatures.json"},
		{"signed by another key", encode(t, customBundle(t, "foreign", "v4", ""), otherPriv), ocispec.MediaTypeImageLayerGzip, "signature"},
		{"too large", bytes.Repeat([]byte{'x'}, 65<<10), ocispec.MediaTypeImageLayerGzip, ErrBundleTooLarge.Error()},
		{"no bundle layer", encode(t, customBundle(t, "image", "v5", ""), priv), "application/vnd.example.other", "no application/vnd.oci.image.layer.v1.tar+gzip layer"},
	}
	for _, tt := range refused {
		push(tt.body, tt.layerType)
		err := next()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want a refusal naming %q", tt.name, err, tt.want)
		}
		checkInForce(t, e, tt.name, err, reason)
	}
	if got := testutil.ToFloat64(e.metrics.refused); got != float64(len(refused)) {
		t.Errorf("refused reloads: got %v, want %d", got, len(refused))
	}

	body, err := bundletest.Encode(good)
	if err != nil {
		t.Fatal(err)
	}
	push(body, ocispec.MediaTypeImageLayerGzip)
	if err := next(); err != nil {
		t.Fatalf("good bundle: %v", err)
	}
	if got, rev := reason(), e.BundleStatus().Revision; got != "second" || rev != "v2" || e.LastRefusal() != nil {
		t.Fatalf("good bundle: reason %q, bundle revision %q, last refusal %v; want second, v2, none", got, rev, e.LastRefusal())
	}
	if s := e.BundleStatus(); !strings.HasPrefix(s.ETag, "sha256:") {
		t.Errorf("status ETag %q, want the manifest digest", s.ETag)
	}

	// Unchanged: the tag resolves to the same digest, nothing is downloaded or reloaded.
	waitUnchanged(t, e, results, "polls of an unchanged tag")

	// The registry fails: the set in force keeps deciding, the error shows, then clears.
	reg.Fail(http.StatusServiceUnavailable)
	waitFor(t, "poll error shown", func() bool { s := e.BundleStatus(); return s.Err != nil && s.Failures >= 2 })
	if got := reason(); got != "second" || !strings.Contains(e.BundleStatus().Err.Error(), "503") {
		t.Errorf("registry failing: reason %q, status %v; want second and the 503", got, e.BundleStatus().Err)
	}
	if s := e.BundleStatus(); strings.Contains(s.Err.Error(), "pa55") {
		t.Errorf("the status shows the password: %v", s.Err)
	}
	reg.Fail(0)
	push(encode(t, customBundle(t, "third", "v9", ""), priv), ocispec.MediaTypeImageLayerGzip)
	if err := next(); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
	if s := e.BundleStatus(); reason() != "third" || s.Err != nil || s.Revision != "v9" {
		t.Errorf("after the outage: reason %q, status %+v; want third, v9, no error", reason(), s)
	}
}

// Issue 12: an engine does not start on an OCI reference it cannot parse or reach, or with
// credentials the registry refuses.
func TestBundleSourceOCIStart(t *testing.T) {
	t.Parallel()
	priv, pub, err := bundletest.KeyPair()
	if err != nil {
		t.Fatal(err)
	}
	reg := bundletest.NewRegistry("ci", "pa55")
	t.Cleanup(reg.Close)
	if err := reg.Push(t.Context(), "org/policies:v1", encode(t, customBundle(t, "x", "v1", ""), priv), ocispec.MediaTypeImageLayerGzip); err != nil {
		t.Fatal(err)
	}
	cfg := func(url, password string) *BundleConfig {
		return &BundleConfig{URL: url, VerificationKey: pub, Algorithm: "ES256", Username: "ci", Password: []byte(password), Client: reg.Client()}
	}
	host := reg.Host()
	token := cfg("oci://"+host+"/org/policies:v1", "pa55")
	token.BearerToken = []byte("t")
	tests := []struct {
		name string
		cfg  *BundleConfig
		want string
	}{
		{"bad reference", cfg("oci://"+host+"/Org/Policies:v1", "pa55"), "invalid reference"},
		{"no tag", cfg("oci://"+host+"/org/policies", "pa55"), "want a tag or digest"},
		{"bearer token", token, "bearer token"},
		{"wrong password", cfg("oci://"+host+"/org/policies:v1", "nope"), "401"},
		{"unknown tag", cfg("oci://"+host+"/org/policies:v2", "pa55"), "not found"},
	}
	for _, tt := range tests {
		_, err := New(t.Context(), Config{Bundle: tt.cfg}, nil, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error naming %q", tt.name, err, tt.want)
		}
	}
	e, err := New(t.Context(), Config{Bundle: cfg("oci://"+host+"/org/policies:v1", "pa55")}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.BundleStatus().Revision; got != "v1" {
		t.Errorf("revision %q, want v1", got)
	}
}

// pollBundles runs e.PollBundle until the test ends: results gets each reload's result,
// next waits for one.
func pollBundles(t *testing.T, e *Engine) (results chan error, next func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	results = make(chan error, 16)
	done := make(chan error, 1)
	go func() { done <- e.PollBundle(ctx, func(err error) { results <- err }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return results, func() error {
		t.Helper()
		select {
		case err := <-results:
			return err
		case <-t.Context().Done():
			t.Fatal("no reload")
		}
		return nil
	}
}

// signedAndTampered is the bundle "second" (revision v2) signed with priv, and the file of a
// copy whose policy was changed after signing.
func signedAndTampered(t *testing.T, priv []byte) (good bundle.Bundle, tampered []byte) {
	t.Helper()
	good = customBundle(t, "second", "v2", "")
	if err := SignBundle(&good, string(priv), "ES256", ""); err != nil {
		t.Fatal(err)
	}
	c := good.Copy()
	c.Modules = slices.Clone(good.Modules) // Copy shares them
	c.Modules[0].Raw = bytes.Replace(c.Modules[0].Raw, []byte("second"), []byte("tamper"), 1)
	tampered, err := bundletest.Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	return good, tampered
}

// checkInForce: after the refusal err of the bundle named name, the set in force is still
// the first (reason "first", revision v1) and err is the last refusal.
func checkInForce(t *testing.T, e *Engine, name string, err error, reason func() string) {
	t.Helper()
	if got, rev := reason(), e.BundleStatus().Revision; got != "first" || rev != "v1" {
		t.Errorf("%s: reason %q, bundle revision %q; want the set in force (first, v1)", name, got, rev)
	}
	if r := e.LastRefusal(); r == nil || r.Err != err {
		t.Errorf("%s: last refusal %v, want %v", name, r, err)
	}
}

// startBundleEngine starts an engine on the bundle source cfg, whose first bundle (revision
// v1) refuses the owner's reads with reason "first", with gateway gw1 of u_owner. reason is
// the reason of the owner's read now.
func startBundleEngine(t *testing.T, cfg *BundleConfig, reg prometheus.Registerer) (e *Engine, reason func() string) {
	t.Helper()
	e, err := New(t.Context(), Config{Bundle: cfg}, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SetGateways(t.Context(), []registry.Gateway{{ID: "gw1", Owner: "u_owner", AuthMode: registry.AuthToken}}); err != nil {
		t.Fatal(err)
	}
	reason = func() string {
		d, _ := e.Decide(t.Context(), owner("http.read"))
		return d.Reason
	}
	if got, rev := reason(), e.BundleStatus().Revision; got != "first" || rev != "v1" {
		t.Fatalf("at start: reason %q, bundle revision %q; want first, v1", got, rev)
	}
	return e, reason
}
