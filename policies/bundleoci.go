package policies

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// ociScheme prefixes a BundleConfig.URL that names a bundle in an OCI registry.
const ociScheme = "oci://"

// ociBundleMediaType is the media type of the layer that holds the bundle: the one OPA's own
// OCI downloader looks for, and the one `oras push bundle.tar.gz:<type>` is given.
const ociBundleMediaType = ocispec.MediaTypeImageLayerGzip

// errNoBundleLayer is a manifest without a layer of ociBundleMediaType.
var errNoBundleLayer = errors.New("not an OPA bundle")

// refusedDownload: err is about what the server sent (too large, not a bundle), not a failure
// to reach it; PollBundle refuses it as it refuses a bundle that fails the gate.
func refusedDownload(err error) bool {
	return errors.Is(err, ErrBundleTooLarge) || errors.Is(err, errNoBundleLayer)
}

// ociManifestMaxBytes bounds a manifest: it lists a few layers, never megabytes.
const ociManifestMaxBytes = 1 << 20

// newOCIRepository is the registry repository of an oci:// bundle URL, reached over HTTPS
// with client and, when username or password is set, those credentials (basic auth, or
// the registry's token service).
func newOCIRepository(cfg BundleConfig, client *http.Client) (*remote.Repository, error) {
	if len(cfg.BearerToken) > 0 {
		return nil, errors.New("policies: bundle: a bearer token is for http(s) URLs; give a registry username and password")
	}
	ref := strings.TrimPrefix(cfg.URL, ociScheme)
	repo, err := remote.NewRepository(ref)
	if err != nil {
		return nil, fmt.Errorf("policies: bundle url %q: %w", cfg.URL, err)
	}
	if repo.Reference.Reference == "" {
		return nil, fmt.Errorf("policies: bundle url %q: want a tag or digest (oci://host/repository:tag)", cfg.URL)
	}
	repo.MaxMetadataBytes = ociManifestMaxBytes
	c := &auth.Client{Client: client, Cache: auth.NewCache()}
	if cfg.Username != "" || len(cfg.Password) > 0 {
		c.Credential = auth.StaticCredential(repo.Reference.Registry,
			auth.Credential{Username: cfg.Username, Password: string(cfg.Password)})
	}
	repo.Client = c
	return repo, nil
}

// fetchOCI is fetch for a bundle in an OCI registry: the tag is resolved to its manifest's
// digest, the registry's ETag, and the bundle layer is downloaded only when that digest is
// not the last one downloaded (a nil body is "not modified"). oras checks every download
// against its digest and size.
func (b *bundleSource) fetchOCI(ctx context.Context) ([]byte, string, error) {
	repo := b.oci
	desc, err := repo.Resolve(ctx, repo.Reference.Reference)
	if err != nil {
		return nil, "", b.failed(fmt.Errorf("policies: bundle %s: resolve: %w", b.shown, err))
	}
	digest := desc.Digest.String()
	b.mu.Lock()
	unchanged := b.status.ETag == digest
	b.mu.Unlock()
	if unchanged {
		b.answered("")
		return nil, "", nil
	}
	layer, err := b.ociLayer(ctx, desc)
	if err != nil {
		return nil, "", err
	}
	if layer.Size > b.maxBytes {
		b.answered(digest)
		return nil, digest, fmt.Errorf("policies: bundle %s: %w (%d bytes)", b.shown, ErrBundleTooLarge, b.maxBytes)
	}
	body, err := content.FetchAll(ctx, repo.Blobs(), layer)
	if err != nil {
		return nil, "", b.failed(fmt.Errorf("policies: bundle %s: layer %s: %w", b.shown, layer.Digest, err))
	}
	b.answered(digest)
	return body, digest, nil
}

// ociLayer reads the manifest desc and returns its bundle layer. A manifest without one is
// recorded as downloaded and refused (not a network error: polling it again changes nothing).
func (b *bundleSource) ociLayer(ctx context.Context, desc ocispec.Descriptor) (ocispec.Descriptor, error) {
	raw, err := content.FetchAll(ctx, b.oci, desc)
	if err != nil {
		return ocispec.Descriptor{}, b.failed(fmt.Errorf("policies: bundle %s: manifest: %w", b.shown, err))
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err == nil {
		for _, l := range m.Layers {
			if l.MediaType == ociBundleMediaType {
				return l, nil
			}
		}
	}
	b.answered(desc.Digest.String())
	return ocispec.Descriptor{}, fmt.Errorf("policies: bundle %s: manifest %s (%s) has no %s layer: %w",
		b.shown, desc.Digest, desc.MediaType, ociBundleMediaType, errNoBundleLayer)
}
