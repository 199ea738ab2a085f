package policies

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moltgate/moltgate/policies/bundletest"
)

// customBundle is an extension set whose deny refuses http.read with reason, as a bundle
// with revision rev; test is its *_test.rego (a passing one when empty).
func customBundle(t testing.TB, reason, rev, test string) bundle.Bundle {
	t.Helper()
	if test == "" {
		test = "package moltgate.custom_test\n\nimport data.moltgate.custom\n\ntest_reason if {\"reason\": \"" + reason + "\"} in custom.deny with input as {\"action\": \"http.read\"}\n"
	}
	b, err := BuildBundle(fstest.MapFS{
		"custom.rego":      {Data: []byte("package moltgate.custom\n\ndeny contains {\"reason\": \"" + reason + "\"} if input.action == \"http.read\"\n")},
		"custom_test.rego": {Data: []byte(test)},
	}, rev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// encode signs b with key (none when nil) and writes it as a bundle file.
func encode(t testing.TB, b bundle.Bundle, key []byte) []byte {
	t.Helper()
	if key != nil {
		if err := SignBundle(&b, string(key), "ES256", ""); err != nil {
			t.Fatal(err)
		}
	}
	body, err := bundletest.Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// Issue 12: a polled bundle server is a policy source. A signed bundle that passes the gate
// goes live (its manifest revision reported); a tampered, unsigned or foreign-signed one, a
// body that is no bundle or is too large, a bundle whose tests fail or that defines data the
// engine owns: each is refused, counted and kept for /readyz, and the set in force keeps
// deciding. An unchanged bundle (304) does nothing; a server error keeps the set in force and
// shows until the server answers again.
func TestBundleSource(t *testing.T) {
	t.Parallel()
	priv, pub, err := bundletest.KeyPair()
	if err != nil {
		t.Fatal(err)
	}
	otherPriv, _, err := bundletest.KeyPair()
	if err != nil {
		t.Fatal(err)
	}
	srv := bundletest.New()
	t.Cleanup(srv.Close)
	srv.Publish(encode(t, customBundle(t, "first", "v1", ""), priv))

	reg := prometheus.NewRegistry()
	e, reason := startBundleEngine(t, &BundleConfig{URL: srv.URL + "/bundle.tar.gz?sig=s3cr3t", PollInterval: 5 * time.Millisecond,
		VerificationKey: pub, Algorithm: "ES256", MaxBytes: 64 << 10}, reg)
	// A reload (SIGHUP) recompiles the bundle in force.
	if err := e.Reload(t.Context()); err != nil || reason() != "first" {
		t.Fatalf("reload: %v, reason %q; want the bundle in force", err, reason())
	}

	results, next := pollBundles(t, e)
	good, tamperedBody := signedAndTampered(t, priv)
	engineData := customBundle(t, "owned", "v8", "")
	engineData.Data = map[string]any{"gateways": map[string]any{}}
	*engineData.Manifest.Roots = append(*engineData.Manifest.Roots, "gateways")
	refused := []struct {
		name string
		body []byte
		want string
	}{
		{"tampered", tamperedBody, "digest mismatch"},
		{"unsigned", encode(t, customBundle(t, "unsigned", "v3", ""), nil), "missing .signatures.json"},
		{"signed by another key", encode(t, customBundle(t, "foreign", "v4", ""), otherPriv), "signature"},
		{"not a bundle", []byte("<html>not found</html>"), "bundle"},
		{"too large", bytes.Repeat([]byte{'x'}, 65<<10), ErrBundleTooLarge.Error()},
		{"failing tests", encode(t, customBundle(t, "untested", "v7", "package moltgate.custom_test\n\ntest_fails if false\n"), priv), "test_fails"},
		{"data the engine owns", encode(t, engineData, priv), "data.gateways"},
	}
	for _, tt := range refused {
		srv.Publish(tt.body)
		err := next()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want a refusal naming %q", tt.name, err, tt.want)
		}
		checkInForce(t, e, tt.name, err, reason)
		if err != nil && strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%s: the error shows the URL's query: %v", tt.name, err)
		}
	}
	if got := testutil.ToFloat64(e.metrics.refused); got != float64(len(refused)) {
		t.Errorf("refused reloads: got %v, want %d", got, len(refused))
	}

	body, err := bundletest.Encode(good)
	if err != nil {
		t.Fatal(err)
	}
	srv.Publish(body)
	if err := next(); err != nil {
		t.Fatalf("good bundle: %v", err)
	}
	if got, rev := reason(), e.BundleStatus().Revision; got != "second" || rev != "v2" || e.LastRefusal() != nil {
		t.Fatalf("good bundle: reason %q, bundle revision %q, last refusal %v; want second, v2, none", got, rev, e.LastRefusal())
	}

	// Unchanged: polls answered 304, nothing reloaded.
	waitUnchanged(t, e, results, "polls answered 304")

	// The server fails: the set in force keeps deciding, the error shows, then clears.
	srv.Fail(http.StatusServiceUnavailable)
	waitFor(t, "poll error shown", func() bool { s := e.BundleStatus(); return s.Err != nil && s.Failures >= 2 })
	if s := fmt.Sprintf("%+v", e.BundleStatus()); strings.Contains(s, "s3cr3t") {
		t.Errorf("the status shows the URL's query: %s", s)
	}
	if got := reason(); got != "second" || !strings.Contains(e.BundleStatus().Err.Error(), "503") {
		t.Errorf("server failing: reason %q, status %v; want second and the 503", got, e.BundleStatus().Err)
	}
	srv.Publish(encode(t, customBundle(t, "third", "v9", ""), priv))
	if err := next(); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
	if s := e.BundleStatus(); reason() != "third" || s.Err != nil || s.Revision != "v9" {
		t.Errorf("after the outage: reason %q, status %+v; want third, v9, no error", reason(), s)
	}
}

// waitUnchanged waits for three polls answered "not modified" (what names them) and fails
// if any reload happened meanwhile (results, from pollBundles).
func waitUnchanged(t *testing.T, e *Engine, results chan error, what string) {
	t.Helper()
	notModified := e.remote.polls.WithLabelValues("not_modified")
	before := testutil.ToFloat64(notModified)
	waitFor(t, what, func() bool { return testutil.ToFloat64(notModified) >= before+3 })
	select {
	case err := <-results:
		t.Fatalf("an unchanged bundle was reloaded: %v", err)
	default:
	}
}

// waitFor polls cond until it holds or the test's deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-t.Context().Done():
			t.Fatalf("%s: never", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Issue 12: a bundle source is configured alone, and an engine does not start on a bundle
// it cannot fetch or would refuse.
func TestBundleSourceStart(t *testing.T) {
	t.Parallel()
	priv, pub, err := bundletest.KeyPair()
	if err != nil {
		t.Fatal(err)
	}
	srv := bundletest.New()
	t.Cleanup(srv.Close)
	cfg := func(url string) *BundleConfig {
		return &BundleConfig{URL: url, VerificationKey: pub, Algorithm: "ES256"}
	}
	tests := []struct {
		name    string
		cfg     Config
		publish []byte
		want    string
	}{
		{"directory and bundle", Config{Dir: t.TempDir(), Bundle: cfg(srv.URL)}, nil, "not both"},
		{"not http", Config{Bundle: cfg("file:///tmp/b.tar.gz")}, nil, "want an http(s) URL"},
		{"nothing published", Config{Bundle: cfg(srv.URL)}, nil, "HTTP status 404"},
		{"unsigned", Config{Bundle: cfg(srv.URL)}, encode(t, customBundle(t, "x", "v1", ""), nil), "missing .signatures.json"},
		{"failing tests", Config{Bundle: cfg(srv.URL)}, encode(t, customBundle(t, "x", "v1", "package moltgate.custom_test\n\ntest_no if false\n"), priv), "test_no"},
	}
	for _, tt := range tests {
		if tt.publish != nil {
			srv.Publish(tt.publish)
		}
		_, err := New(t.Context(), tt.cfg, nil, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error naming %q", tt.name, err, tt.want)
		}
	}
	e, err := New(t.Context(), Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.PollBundle(t.Context(), func(error) {}); err == nil || e.BundleStatus() != nil {
		t.Fatalf("without a bundle: PollBundle %v, status %v; want an error and no status", err, e.BundleStatus())
	}
}
