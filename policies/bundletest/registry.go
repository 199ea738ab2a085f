package bundletest

import (
	"bytes"
	"context"
	"crypto/subtle"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/registry"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// Registry is an OCI registry for tests: go-containerregistry's in-memory implementation of
// the distribution API on an httptest TLS server, behind basic auth, with fault injection.
// Its zero value is not usable: use NewRegistry.
type Registry struct {
	*httptest.Server
	user, password string
	status         atomic.Int64 // non-zero: answer this instead
}

// NewRegistry starts a registry that lets in user with password; Close it when done.
func NewRegistry(user, password string) *Registry {
	r := &Registry{user: user, password: password}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if s := r.status.Load(); s != 0 {
			http.Error(w, http.StatusText(int(s)), int(s))
			return
		}
		u, p, ok := req.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(u+"\x00"+p), []byte(user+"\x00"+password)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="bundletest"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, req)
	}))
	return r
}

// Host is the registry's host:port, as an oci:// reference names it.
func (r *Registry) Host() string { return strings.TrimPrefix(r.URL, "https://") }

// Fail answers every request with status; 0 serves again.
func (r *Registry) Fail(status int) { r.status.Store(int64(status)) }

// Push pushes body as an OCI artifact tagged ref (repository:tag), its one layer of
// layerType: application/vnd.oci.image.layer.v1.tar+gzip for a bundle, as OPA and
// `oras push bundle.tar.gz:application/vnd.oci.image.layer.v1.tar+gzip` do.
func (r *Registry) Push(ctx context.Context, ref string, body []byte, layerType string) error {
	repo, err := remote.NewRepository(r.Host() + "/" + ref)
	if err != nil {
		return fmt.Errorf("bundletest: %w", err)
	}
	repo.Client = &auth.Client{Client: r.Client(),
		Credential: auth.StaticCredential(r.Host(), auth.Credential{Username: r.user, Password: r.password})}
	layer := content.NewDescriptorFromBytes(layerType, body)
	if err := repo.Push(ctx, layer, bytes.NewReader(body)); err != nil {
		return fmt.Errorf("bundletest: push layer: %w", err)
	}
	desc, err := oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, "application/vnd.openpolicyagent.bundle",
		oras.PackManifestOptions{Layers: []ocispec.Descriptor{layer}})
	if err != nil {
		return fmt.Errorf("bundletest: push manifest: %w", err)
	}
	if err := repo.Tag(ctx, desc, repo.Reference.Reference); err != nil {
		return fmt.Errorf("bundletest: tag: %w", err)
	}
	return nil
}
