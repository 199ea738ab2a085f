package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/moltgate/moltgate/policies"
)

const policyBundleUsage = "usage: moltgate policy bundle build DIR -o FILE [--revision R] | bundle sign FILE --signing-key KEYFILE [--key-id ID] [--alg RS256]"

// policyBundle runs `moltgate policy bundle build|sign`: an OPA bundle of a policy
// directory, for policies.bundle.url, and its signature, as `opa build` writes them.
func policyBundle(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError{policyBundleUsage}
	}
	switch args[0] {
	case "build":
		return policyBundleBuild(ctx, args[1:], stdout)
	case "sign":
		return policyBundleSign(args[1:], stdout)
	}
	return usageError{policyBundleUsage}
}

// policyBundleBuild checks DIR as serve would (policy check), then writes it as a bundle.
func policyBundleBuild(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("policy bundle build", policyBundleUsage, stdout)
	out := fs.String("o", "", "the bundle file to write (.tar.gz)")
	rev := fs.String("revision", "", "the manifest's revision (default: the set's content hash)")
	words, err := fs.parseInterleaved(args)
	if err != nil {
		return err
	}
	if len(words) != 1 {
		return usageError{policyBundleUsage}
	}
	if err := fs.missing("o"); err != nil {
		return err
	}
	e, err := policies.New(ctx, policies.Config{Dir: words[0]}, nil, nil)
	if err != nil {
		return err
	}
	if *rev == "" {
		*rev = e.Revision()
	}
	b, err := policies.BuildBundle(os.DirFS(words[0]), *rev)
	if err != nil {
		return err
	}
	if err := writeBundle(*out, b); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: revision %s, roots %v\n", *out, *rev, *b.Manifest.Roots)
	return nil
}

// policyBundleSign adds .signatures.json to a bundle file, replacing any signature in it.
func policyBundleSign(args []string, stdout io.Writer) error {
	fs := newFlags("policy bundle sign", policyBundleUsage, stdout)
	key := fs.String("signing-key", "", "file holding the PEM private key (RS*, PS*, ES*) or the HMAC secret (HS*)")
	keyID := fs.String("key-id", "", "the key id put in the signature (kid)")
	alg := fs.String("alg", "RS256", "signature algorithm: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, HS256, HS384, HS512")
	words, err := fs.parseInterleaved(args)
	if err != nil {
		return err
	}
	if len(words) != 1 {
		return usageError{policyBundleUsage}
	}
	if err := fs.missing("signing-key"); err != nil {
		return err
	}
	// A key given inline would sit in the shell history and the process list: a file only.
	if st, err := os.Stat(*key); err != nil || st.IsDir() {
		return fmt.Errorf("policy bundle sign: --signing-key %s: not a readable file", *key)
	}
	raw, err := os.ReadFile(words[0])
	if err != nil {
		return fmt.Errorf("policy bundle sign: %w", err)
	}
	// The signature is replaced, not checked: whoever holds the signing key vouches anew.
	b, err := bundle.NewCustomReader(bundle.NewTarballLoader(bytes.NewReader(raw))).WithSkipBundleVerification(true).Read()
	if err != nil {
		return fmt.Errorf("policy bundle sign: read %s: %w", words[0], err)
	}
	if err := policies.SignBundle(&b, *key, *alg, *keyID); err != nil {
		return err
	}
	if err := writeBundle(words[0], b); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: signed (%s)\n", words[0], *alg)
	return nil
}

// writeBundle writes b to path through a temporary file and a rename: a bundle server never
// serves half a file.
func writeBundle(path string, b bundle.Bundle) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".bundle-*")
	if err != nil {
		return fmt.Errorf("policy bundle: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := bundle.Write(tmp, b); err != nil {
		tmp.Close()
		return fmt.Errorf("policy bundle: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("policy bundle: write %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("policy bundle: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("policy bundle: write %s: %w", path, err)
	}
	return nil
}
