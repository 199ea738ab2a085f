package policies

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing/fstest"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/prometheus/client_golang/prometheus"
	"oras.land/oras-go/v2/registry/remote"
)

// DefaultBundlePollInterval is how often a bundle server is asked for a new bundle when
// BundleConfig.PollInterval is zero.
const DefaultBundlePollInterval = 10 * time.Second

// DefaultBundleMaxBytes bounds a downloaded bundle (and each file in it, decompressed) when
// BundleConfig.MaxBytes is zero.
const DefaultBundleMaxBytes = 16 << 20

// bundleMaxBackoff caps the wait between polls after consecutive network failures.
const bundleMaxBackoff = 5 * time.Minute

// ErrBundleTooLarge is returned for a bundle larger than BundleConfig.MaxBytes.
var ErrBundleTooLarge = errors.New("bundle larger than the limit")

// BundleConfig makes an OPA bundle server the source of the policy set: a gzipped tarball
// in OPA's bundle format (`opa build`, `moltgate policy bundle build`) fetched with HTTP GET
// and polled with If-None-Match, so any server of static files (an OPA bundle server, nginx,
// an S3 or GCS bucket over HTTPS) serves it. A new bundle passes the same gate as a
// directory (compile, input schema, its own tests, required data) before it goes live.
type BundleConfig struct {
	// URL is the bundle's http(s) URL, or oci://host/repository:tag for a bundle pushed to an
	// OCI registry (see fetchOCI). Required.
	URL string
	// PollInterval is how often the server is asked for a new bundle. Zero means
	// DefaultBundlePollInterval (10s).
	PollInterval time.Duration
	// VerificationKey, if set, is the key that must have signed every bundle (its
	// .signatures.json, checked by OPA's bundle package): a PEM public key for RS*, PS* and
	// ES*, or the shared secret for HS*. A bundle without a valid signature by it is refused.
	// Nil: signatures are not required (and a signed bundle is refused, as OPA does, for
	// want of a key to check it with).
	VerificationKey []byte
	// Algorithm is the signature algorithm of VerificationKey. Empty means RS256.
	Algorithm string
	// KeyID names VerificationKey, whatever key id a signature claims. Empty means "default".
	KeyID string
	// Scope, if set, must equal the scope claimed by the signature.
	Scope string
	// BearerToken, if set, is sent as "Authorization: Bearer" with each request (http(s)).
	BearerToken []byte
	// Username and Password, if set, log in to an OCI registry (oci:// URLs). Unset: anonymous.
	Username string
	Password []byte
	// MaxBytes bounds the download and each file in it, decompressed. Zero means
	// DefaultBundleMaxBytes (16 MiB).
	MaxBytes int64
	// Client fetches the bundle. Nil means a client with a 30s timeout.
	Client *http.Client
}

// BundleStatus describes the bundle source, for /readyz detail.
type BundleStatus struct {
	URL      string
	Revision string    // the manifest revision of the bundle in force
	ETag     string    // the ETag of the last bundle downloaded (in force or refused)
	Polled   time.Time // when the server last answered a poll
	Err      error     // the last poll's network or HTTP error; nil once the server answers again
	ErrTime  time.Time // when Err happened
	Failures int       // consecutive failed polls
}

// candidate is a policy set read from a source other than the configured directory or the
// embedded set, waiting to pass the gate.
type candidate struct {
	fsys fs.FS
	name string // for errors and logs: the URL and the bundle's revision
	live func() // called once the set is in force
}

// bundleSource polls a bundle server. Its state is guarded by mu: the poller writes it,
// /readyz and SIGHUP reloads read it.
type bundleSource struct {
	url      string // fetched
	shown    string // url without credentials or query, for errors, logs and /readyz
	interval time.Duration
	maxBytes int64
	token    []byte
	client   *http.Client
	verify   *bundle.VerificationConfig // nil: signatures not required
	oci      *remote.Repository         // an oci:// URL's; nil for http(s)
	polls    *prometheus.CounterVec

	mu     sync.Mutex
	status BundleStatus
	fsys   fs.FS // the set in force
}

func newBundleSource(cfg BundleConfig, reg prometheus.Registerer) (*bundleSource, error) {
	if !strings.HasPrefix(cfg.URL, "http://") && !strings.HasPrefix(cfg.URL, "https://") && !strings.HasPrefix(cfg.URL, ociScheme) {
		return nil, errors.New("policies: bundle url: want an http(s) URL or oci://host/repository:tag")
	}
	if cfg.PollInterval < 0 || cfg.MaxBytes < 0 {
		return nil, errors.New("policies: bundle: negative poll interval or size limit")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("policies: bundle url: %w", err)
	}
	// A presigned URL's query and a URL's user info are credentials: never shown.
	if u.User = nil; u.RawQuery != "" {
		u.RawQuery = "…"
	}
	b := &bundleSource{url: cfg.URL, shown: u.String(), interval: cfg.PollInterval, maxBytes: cfg.MaxBytes, token: cfg.BearerToken,
		client: cfg.Client}
	b.status.URL = b.shown
	if b.interval == 0 {
		b.interval = DefaultBundlePollInterval
	}
	if b.maxBytes == 0 {
		b.maxBytes = DefaultBundleMaxBytes
	}
	if b.client == nil {
		b.client = &http.Client{Timeout: 30 * time.Second}
	}
	if strings.HasPrefix(cfg.URL, ociScheme) {
		if b.oci, err = newOCIRepository(cfg, b.client); err != nil {
			return nil, err
		}
	}
	if len(cfg.VerificationKey) > 0 {
		id := cfg.KeyID
		if id == "" {
			id = "default"
		}
		key := &bundle.KeyConfig{Key: string(cfg.VerificationKey), Algorithm: cfg.Algorithm, Scope: cfg.Scope}
		if key.Algorithm == "" {
			key.Algorithm = "RS256"
		}
		// The configured key is the only one: whatever key id a signature names, it is
		// checked against this key.
		b.verify = bundle.NewVerificationConfig(map[string]*bundle.KeyConfig{id: key}, id, cfg.Scope, nil)
	}
	b.polls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "moltgate_policy_bundle_polls_total",
		Help: "Polls of the policy bundle server by result: changed (a new bundle was downloaded; see moltgate_policy_reloads_total for whether it went live), not_modified, or error (network or HTTP error; the set in force keeps deciding).",
	}, []string{"result"})
	if reg != nil {
		if err := reg.Register(b.polls); err != nil {
			return nil, fmt.Errorf("policies: register metrics: %w", err)
		}
	}
	return b, nil
}

// firstBundle sets up the bundle source and fetches the bundle the engine starts with.
func (e *Engine) firstBundle(ctx context.Context, cfg BundleConfig, reg prometheus.Registerer) (*candidate, error) {
	b, err := newBundleSource(cfg, reg)
	if err != nil {
		return nil, err
	}
	body, etag, err := b.fetch(ctx)
	if err != nil {
		return nil, err
	}
	cand, err := b.read(body, etag)
	if err != nil {
		return nil, fmt.Errorf("policies: %w", err)
	}
	e.remote = b
	return cand, nil
}

// BundleStatus returns the state of the bundle source, nil when the engine has none.
func (e *Engine) BundleStatus() *BundleStatus {
	if e.remote == nil {
		return nil
	}
	e.remote.mu.Lock()
	defer e.remote.mu.Unlock()
	s := e.remote.status
	return &s
}

// PollBundle asks the bundle server (Config.Bundle) for a new bundle every poll interval
// and reloads with each new one, calling reloaded with the result (nil: the new set is
// live; else it was refused, or could not be read, and the old one decides). An unchanged
// bundle (304) does nothing. A network or HTTP error keeps the set in force, shows in
// BundleStatus and backs off: the wait doubles with each consecutive failure, up to 5
// minutes. It returns when ctx ends, or at once with an error when the engine has no bundle
// source.
func (e *Engine) PollBundle(ctx context.Context, reloaded func(error)) error {
	b := e.remote
	if b == nil {
		return errors.New("policies: poll: no bundle source")
	}
	timer := time.NewTimer(b.interval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		body, etag, err := b.fetch(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil && !refusedDownload(err):
			b.polls.WithLabelValues("error").Inc()
			e.logger.LogAttrs(ctx, slog.LevelWarn, "policies: bundle poll failed; the set in force keeps deciding",
				slog.String("url", b.shown), slog.Any("err", err))
		case body == nil && err == nil:
			b.polls.WithLabelValues("not_modified").Inc()
		default:
			b.polls.WithLabelValues("changed").Inc()
			reloaded(e.reloadWith(ctx, func() (*candidate, error) {
				if err != nil {
					return nil, err
				}
				return b.read(body, etag)
			}))
		}
		timer.Reset(b.wait())
	}
}

// wait is the time to the next poll: the interval, doubled for each consecutive failure.
func (b *bundleSource) wait() time.Duration {
	b.mu.Lock()
	n := b.status.Failures
	b.mu.Unlock()
	d := b.interval
	for range min(n, 10) {
		d *= 2
	}
	return max(min(d, bundleMaxBackoff), b.interval)
}

// fetch downloads the bundle unless its ETag is the last one downloaded: a nil body is
// "not modified". A bundle over the size limit is ErrBundleTooLarge, and its ETag is kept
// as any downloaded bundle's is, so a refused bundle is not fetched and refused again.
func (b *bundleSource) fetch(ctx context.Context) ([]byte, string, error) {
	if b.oci != nil {
		return b.fetchOCI(ctx)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.url, nil)
	if err != nil {
		return nil, "", b.failed(fmt.Errorf("policies: bundle %s: %w", b.shown, err))
	}
	b.mu.Lock()
	if b.status.ETag != "" {
		req.Header.Set("If-None-Match", b.status.ETag)
	}
	b.mu.Unlock()
	if len(b.token) > 0 {
		req.Header.Set("Authorization", "Bearer "+string(b.token))
	}
	resp, err := b.client.Do(req)
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		err = ue.Err // its message holds the whole URL
	}
	if err != nil {
		return nil, "", b.failed(fmt.Errorf("policies: bundle %s: %w", b.shown, err))
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		b.answered("")
		return nil, "", nil
	case http.StatusOK:
	default:
		return nil, "", b.failed(fmt.Errorf("policies: bundle %s: HTTP status %d", b.shown, resp.StatusCode))
	}
	etag := resp.Header.Get("ETag")
	body, err := io.ReadAll(io.LimitReader(resp.Body, b.maxBytes+1))
	if err != nil {
		return nil, "", b.failed(fmt.Errorf("policies: bundle %s: read: %w", b.shown, err))
	}
	b.answered(etag)
	if int64(len(body)) > b.maxBytes {
		return nil, etag, fmt.Errorf("policies: bundle %s: %w (%d bytes)", b.shown, ErrBundleTooLarge, b.maxBytes)
	}
	return body, etag, nil
}

// failed records a poll that did not reach a bundle.
func (b *bundleSource) failed(err error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.status.Err, b.status.ErrTime = err, time.Now()
	b.status.Failures++
	return err
}

// answered records a poll the server answered; etag, if set, is the downloaded bundle's.
func (b *bundleSource) answered(etag string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.status.Polled, b.status.Err, b.status.Failures = time.Now(), nil, 0
	if etag != "" {
		b.status.ETag = etag
	}
}

// read reads a downloaded bundle with OPA's bundle reader, which checks its signature when
// a verification key is configured, into a candidate laid out as a directory: the modules
// at their paths, the data in data.json.
func (b *bundleSource) read(body []byte, etag string) (*candidate, error) {
	r := bundle.NewCustomReader(bundle.NewTarballLoaderWithBaseURL(bytes.NewReader(body), b.shown)).
		WithRegoVersion(ast.RegoV1).
		WithProcessAnnotations(true).
		WithSizeLimitBytes(b.maxBytes).
		WithBundleEtag(etag)
	if b.verify != nil {
		r = r.WithBundleVerificationConfig(b.verify)
	}
	bd, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", b.shown, err)
	}
	name := fmt.Sprintf("bundle %s (revision %q)", b.shown, bd.Manifest.Revision)
	if bd.Type() != bundle.SnapshotBundleType || len(bd.WasmModules) > 0 || len(bd.PlanModules) > 0 {
		return nil, fmt.Errorf("%s: only Rego snapshot bundles are supported (no delta, wasm or plan)", name)
	}
	c, err := bundleCandidate(bd, name)
	if err != nil {
		return nil, err
	}
	c.live = func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.fsys, b.status.Revision = c.fsys, bd.Manifest.Revision
	}
	return c, nil
}

// inForce is the bundle in force, laid out as a directory, for a reload (SIGHUP) that
// recompiles it.
func (b *bundleSource) inForce() fs.FS {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.fsys
}

// bundleCandidate lays a bundle out as the directory it was built from, so that it is
// loaded, type-checked and tested exactly as a directory is. (fstest.MapFS is the standard
// library's in-memory fs.FS.)
func bundleCandidate(bd bundle.Bundle, name string) (*candidate, error) {
	fsys := fstest.MapFS{}
	for _, m := range bd.Modules {
		fsys[strings.TrimPrefix(m.Path, "/")] = &fstest.MapFile{Data: m.Raw, Mode: 0o444}
	}
	docs := bd.Data
	if docs == nil {
		docs = map[string]any{}
	}
	data, err := json.Marshal(docs)
	if err != nil {
		return nil, fmt.Errorf("%s: data: %w", name, err)
	}
	fsys["data.json"] = &fstest.MapFile{Data: data, Mode: 0o444}
	return &candidate{fsys: fsys, name: name}, nil
}
