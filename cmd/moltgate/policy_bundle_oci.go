package main

import (
	"errors"
	"fmt"
	"strings"

	"oras.land/oras-go/v2/registry"

	"github.com/moltgate/moltgate/policies"
)

// validateOCI reports the problems of an oci:// policies.bundle.url and of the registry
// credentials, which only an oci:// URL takes.
func (b *PolicyBundleConfig) validateOCI() []error {
	ref, isOCI := strings.CutPrefix(b.URL, "oci://")
	if !isOCI {
		if b.Username != "" || b.Password != nil {
			return []error{errors.New("policies.bundle.username, password: only for an oci:// url (use bearer_token)")}
		}
		return nil
	}
	var errs []error
	if r, err := registry.ParseReference(ref); err != nil {
		errs = append(errs, fmt.Errorf("policies.bundle.url: %q: %w", b.URL, err))
	} else if r.Reference == "" {
		errs = append(errs, fmt.Errorf("policies.bundle.url: %q: want a tag or digest (oci://host/repository:tag)", b.URL))
	}
	if b.BearerToken != nil {
		errs = append(errs, errors.New("policies.bundle.bearer_token: only for an http(s) url (use username and password)"))
	}
	return errs
}

// resolveOCI sets the registry credentials of out.
func (b *PolicyBundleConfig) resolveOCI(out *policies.BundleConfig, env func(string) string) error {
	out.Username = b.Username
	if ref := b.Password; ref != nil {
		v, err := ref.resolve(env)
		if err != nil {
			return fmt.Errorf("policies.bundle.password: %w", err)
		}
		out.Password = v
	}
	return nil
}
