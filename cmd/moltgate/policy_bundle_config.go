package main

import (
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/keys"

	"github.com/moltgate/moltgate/policies"
)

// PolicyBundleConfig makes an OPA bundle server the source of the policy set
// (policies.bundle); exclusive with policies.dir.
type PolicyBundleConfig struct {
	// URL is the bundle's http(s) URL, e.g. https://bundles.example.com/moltgate.tar.gz, or
	// oci://registry.example.com/org/policies:tag for a bundle pushed to an OCI registry. Required.
	URL string `yaml:"url"`
	// PollInterval is how often the server is asked for a new bundle (If-None-Match). Default 10s.
	PollInterval time.Duration `yaml:"poll_interval"`
	// VerificationKey, if set, must have signed every bundle: the whole file (or variable) is
	// a PEM public key, or the shared secret for HS* algorithms. Unset: unsigned bundles.
	VerificationKey *SecretRef `yaml:"verification_key"`
	// Algorithm of VerificationKey: RS256 (default), RS384, RS512, PS*, ES256, ES384, ES512, HS*.
	Algorithm string `yaml:"algorithm"`
	// KeyID names the verification key. Default "default".
	KeyID string `yaml:"key_id"`
	// Scope, if set, must be the scope the signature claims.
	Scope string `yaml:"scope"`
	// BearerToken, if set, is sent as Authorization: Bearer with each request.
	BearerToken *SecretRef `yaml:"bearer_token"`
	// Username and Password, if set, log in to the OCI registry of an oci:// URL. Unset: anonymous.
	Username string     `yaml:"username"`
	Password *SecretRef `yaml:"password"`
	// MaxBytes bounds the download and each file in it, decompressed. Default 16777216 (16 MiB).
	MaxBytes int64 `yaml:"max_bytes"`
}

// validateBundle reports every problem of policies.bundle, each naming its key.
func (p *PoliciesConfig) validateBundle() []error {
	b := p.Bundle
	if b == nil {
		return nil
	}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("policies.bundle.%s: "+format, append([]any{key}, args...)...))
	}
	if p.Dir != "" {
		errs = append(errs, errors.New("policies.bundle: give policies.dir or policies.bundle, not both"))
	}
	if u, err := url.Parse(b.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http" && u.Scheme != "oci") || u.Host == "" {
		bad("url", "%q: want an http(s) URL or oci://host/repository:tag", b.URL)
	}
	errs = append(errs, b.validateOCI()...)
	if b.PollInterval < 0 {
		bad("poll_interval", "negative")
	}
	if b.MaxBytes < 0 {
		bad("max_bytes", "negative")
	}
	if b.Algorithm != "" && !keys.IsSupportedAlgorithm(b.Algorithm) {
		bad("algorithm", "%q: not a signature algorithm OPA supports", b.Algorithm)
	}
	for key, ref := range map[string]*SecretRef{"verification_key": b.VerificationKey, "bearer_token": b.BearerToken, "password": b.Password} {
		if ref != nil {
			if err := ref.validate(); err != nil {
				bad(key, "%v", err)
			}
		}
	}
	if b.VerificationKey == nil && (b.Algorithm != "" || b.KeyID != "" || b.Scope != "") {
		bad("verification_key", "required with algorithm, key_id or scope")
	}
	return errs
}

// bundleSecretRefs lists the secret references of policies.bundle for checkSecrets.
func (p *PoliciesConfig) bundleSecretRefs() []secretRef {
	b := p.Bundle
	if b == nil {
		return nil
	}
	var out []secretRef
	if ref := b.VerificationKey; ref != nil && ref.validate() == nil {
		out = append(out, secretRef{key: "policies.bundle.verification_key", ref: ref, whole: ref.File != "", check: b.checkKey})
	}
	if ref := b.BearerToken; ref != nil && ref.validate() == nil {
		out = append(out, secretRef{key: "policies.bundle.bearer_token", ref: ref})
	}
	if ref := b.Password; ref != nil && ref.validate() == nil {
		out = append(out, secretRef{key: "policies.bundle.password", ref: ref})
	}
	return out
}

// checkKey: a key for an asymmetric algorithm is PEM.
func (b *PolicyBundleConfig) checkKey(v []byte) error {
	if strings.HasPrefix(b.Algorithm, "HS") {
		return nil
	}
	if blk, _ := pem.Decode(v); blk == nil {
		return errors.New("not a PEM public key")
	}
	return nil
}

// engineBundle resolves policies.bundle into the engine's configuration (nil without one).
func (p *PoliciesConfig) engineBundle(env func(string) string) (*policies.BundleConfig, error) {
	b := p.Bundle
	if b == nil {
		return nil, nil
	}
	out := &policies.BundleConfig{URL: b.URL, PollInterval: b.PollInterval, Algorithm: b.Algorithm, KeyID: b.KeyID,
		Scope: b.Scope, MaxBytes: b.MaxBytes}
	if ref := b.VerificationKey; ref != nil {
		// A PEM key is several lines: the whole file, not its first line.
		v, err := ref.resolve(env)
		if ref.File != "" {
			v, err = readSecretFile(ref.File)
		}
		if err != nil {
			return nil, fmt.Errorf("policies.bundle.verification_key: %w", err)
		}
		if err := b.checkKey(v); err != nil {
			return nil, fmt.Errorf("policies.bundle.verification_key: %w", err)
		}
		out.VerificationKey = v
	}
	if ref := b.BearerToken; ref != nil {
		v, err := ref.resolve(env)
		if err != nil {
			return nil, fmt.Errorf("policies.bundle.bearer_token: %w", err)
		}
		out.BearerToken = v
	}
	if err := b.resolveOCI(out, env); err != nil {
		return nil, err
	}
	return out, nil
}

// writeBundleStatus adds the bundle source's state to /readyz (nothing without one). A poll
// that fails leaves the set in force deciding: ready, with the why.
func writeBundleStatus(w io.Writer, s *policies.BundleStatus) {
	if s == nil {
		return
	}
	fmt.Fprintf(w, "policy bundle revision %q from %s\n", s.Revision, s.URL)
	if s.Err != nil {
		fmt.Fprintf(w, "policy bundle poll failed at %s (%d in a row; the set in force keeps deciding): %v\n",
			s.ErrTime.UTC().Format(time.RFC3339), s.Failures, s.Err)
	}
}
