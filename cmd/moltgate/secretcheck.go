package main

import (
	"errors"
	"fmt"

	"github.com/moltgate/moltgate/keystore"
)

// secretRef is one secret reference of a configuration, with its key and what its value
// must be.
type secretRef struct {
	key   string
	ref   *SecretRef
	check func(value []byte) error // nil: any non-empty value
	whole bool                     // the whole file is the value (a keyring), not its first line
}

// secretRefs lists every secret reference in c: the SecretRef fields, and the keyring of
// keystore.source file or env.
func (c *Config) secretRefs() []secretRef {
	var out []secretRef
	add := func(key string, ref *SecretRef, check func([]byte) error) {
		if ref != nil && ref.validate() == nil {
			out = append(out, secretRef{key: key, ref: ref, check: check})
		}
	}
	add("master_key", c.MasterKey, func(v []byte) error {
		k, err := keystore.ParseMasterKey(v)
		clear(k)
		return err
	})
	add("admin_token", c.AdminToken, func(v []byte) error {
		if len(v) < 32 {
			return errors.New("shorter than 32 characters")
		}
		return nil
	})
	if c.Clerk != nil {
		add("clerk.secret_key", c.Clerk.SecretKey, nil)
	}
	keyring := func(v []byte) error {
		versions, err := keystore.ParseKeyring(v)
		for _, k := range versions {
			clear(k)
		}
		return err
	}
	switch k := c.Keystore; k.Source {
	case "file":
		if k.File != "" {
			out = append(out, secretRef{key: "keystore.file", ref: &SecretRef{File: k.File}, check: keyring, whole: true})
		}
	case "env":
		add("keystore.env", &SecretRef{Env: k.Env}, keyring)
	case "vault":
		if k.Vault != nil {
			add("keystore.vault.token", k.Vault.Token, nil)
		}
	}
	if f := c.Provisioner.Fly; f != nil {
		add("provisioner.fly.token", f.Token, nil)
	}
	if cf := c.Provisioner.Cloudflare; cf != nil {
		add("provisioner.cloudflare.api_token", cf.APIToken, nil)
	}
	out = append(out, c.Policies.bundleSecretRefs()...)
	if c.Audit.Redis != nil {
		add("audit.redis.password", c.Audit.Redis.Password, nil)
		add("audit.redis.sentinel.password", c.Audit.Redis.sentinelPassword(), nil)
	}
	if r := c.Store.Redis; r != nil {
		add("store.redis.password", r.Password, nil)
		add("store.redis.sentinel.password", r.sentinelPassword(), nil)
	}
	return out
}

// checkSecrets resolves every secret reference of c as serve will, without keeping or
// showing a value: a file must exist, be readable, be readable by its owner only and hold a
// value of the right form; a variable must be set. Every problem is reported at once, each
// naming its key. config check runs it, and serve runs it before it opens anything, so a
// missing secret stops a start before audit has begun.
func (c *Config) checkSecrets(env func(string) string) error {
	var errs []error
	for _, s := range c.secretRefs() {
		var v []byte
		var err error
		if s.whole {
			v, err = readSecretFile(s.ref.File)
		} else {
			v, err = s.ref.resolve(env)
		}
		if err == nil && s.check != nil {
			err = s.check(v)
		}
		clear(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.key, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("config: secrets: %w", errors.Join(errs...))
	}
	return nil
}
