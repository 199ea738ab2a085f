package policies

import (
	"fmt"
	"os"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/moltgate/moltgate/policies/bundletest"
)

// BenchmarkBundlePollUnchanged measures the poll of a bundle that has not changed: an OCI
// registry's (the tag resolved to the same manifest digest, over TLS with basic auth), against
// the baseline of an HTTP bundle server's 304 measured in the same run. With
// MOLTGATE_BENCH_REPORT=1 it prints, for `make bench`:
//
//	bench policy_bundle_poll_oci_unchanged_us 129 (http 304: 97 us)
//	bench policy_bundle_poll_oci_vs_http 1.3
func BenchmarkBundlePollUnchanged(b *testing.B) {
	priv, pub, err := bundletest.KeyPair()
	if err != nil {
		b.Fatal(err)
	}
	body := encode(b, customBundle(b, "first", "v1", ""), priv)
	srv := bundletest.New()
	defer srv.Close()
	srv.Publish(body)
	reg := bundletest.NewRegistry("ci", "pa55")
	defer reg.Close()
	if err := reg.Push(b.Context(), "org/policies:live", body, ocispec.MediaTypeImageLayerGzip); err != nil {
		b.Fatal(err)
	}
	sources := map[string]BundleConfig{
		"http": {URL: srv.URL, VerificationKey: pub, Algorithm: "ES256"},
		"oci": {URL: "oci://" + reg.Host() + "/org/policies:live", VerificationKey: pub, Algorithm: "ES256",
			Username: "ci", Password: []byte("pa55"), Client: reg.Client()},
	}
	per := map[string]time.Duration{}
	for _, name := range []string{"http", "oci"} {
		src, err := newBundleSource(sources[name], nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := src.fetch(b.Context()); err != nil { // the first download
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			start := time.Now()
			for b.Loop() {
				if body, _, err := src.fetch(b.Context()); err != nil || body != nil {
					b.Fatalf("unchanged poll: %v, %d bytes", err, len(body))
				}
			}
			per[name] = time.Since(start) / time.Duration(b.N)
		})
	}
	if os.Getenv("MOLTGATE_BENCH_REPORT") == "1" && per["http"] > 0 {
		fmt.Printf("bench policy_bundle_poll_oci_unchanged_us %.0f (http 304: %.0f us)\n", us(per["oci"]), us(per["http"]))
		fmt.Printf("bench policy_bundle_poll_oci_vs_http %.1f\n", float64(per["oci"])/float64(per["http"]))
	}
}
