package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/moltgate/moltgate/keystore"
)

// KeystoreConfig says where the master keys come from and how provider keys are verified.
type KeystoreConfig struct {
	// Source of the master key versions:
	//   file  – a keyring file of VERSION:KEY lines (hex or base64), mode 0600; rotate-master
	//           writes new versions into it and removes retired ones.
	//   env   – the same text in the environment variable Env (versions are read only: add one
	//           to the secret and restart).
	//   vault – versions stored only wrapped by a Vault transit key, unwrapped at start.
	// Default: master_key if set (one version), else the development key in
	// <data_dir>/master.key, which behaves as a keyring file.
	Source string `yaml:"source"`
	// File is the keyring file of source file.
	File string `yaml:"file"`
	// Env is the environment variable of source env.
	Env string `yaml:"env"`
	// Vault configures source vault.
	Vault *VaultConfig `yaml:"vault"`
	// VerifyURLs overrides the URL each provider's key check requests (a provider's API behind
	// an egress proxy, or a test stand-in); providers not named use their public API.
	VerifyURLs map[string]string `yaml:"verify_urls"`
}

// VaultConfig is the Vault transit key that wraps the master key versions.
type VaultConfig struct {
	// Address of Vault, e.g. https://vault.internal:8200. Required.
	Address string `yaml:"address"`
	// Token authenticates to Vault; it needs transit encrypt and decrypt on Key. Required.
	Token *SecretRef `yaml:"token"`
	// Mount is the transit engine's mount path. Default transit.
	Mount string `yaml:"mount"`
	// Key is the transit key's name. Required.
	Key string `yaml:"transit_key"`
}

// validate reports every problem of the keystore section, each naming its key.
func (k *KeystoreConfig) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("keystore.%s: "+format, append([]any{key}, args...)...))
	}
	switch k.Source {
	case "":
	case "file":
		if k.File == "" {
			bad("file", "required with source file")
		}
	case "env":
		if k.Env == "" {
			bad("env", "required with source env")
		}
	case "vault":
		switch v := k.Vault; {
		case v == nil:
			bad("vault", "required with source vault")
		default:
			if u, err := url.Parse(v.Address); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				bad("vault.address", "%q: want an http(s) URL", v.Address)
			}
			if v.Token == nil {
				bad("vault.token", "required ({file: PATH} or {env: NAME})")
			} else if err := v.Token.validate(); err != nil {
				bad("vault.token", "%v", err)
			}
			if v.Key == "" {
				bad("vault.transit_key", "required")
			}
		}
	default:
		bad("source", "%q: want file, env or vault", k.Source)
	}
	for p, u := range k.VerifyURLs {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			bad("verify_urls."+p, "%q: want an http(s) URL", u)
		}
	}
	return errs
}

// masterSource returns the configured source of master key versions. kv is the store (the
// vault source keeps the wrapped versions there).
func masterSource(ctx context.Context, cfg *Config, env func(string) string, kv keystore.KV, logger *slog.Logger,
	stderr io.Writer) (keystore.MasterKeySource, error) {
	k := cfg.Keystore
	switch k.Source {
	case "file":
		return keystore.FileSource{Path: k.File}, nil
	case "env":
		text := env(k.Env)
		if text == "" {
			return nil, fmt.Errorf("keystore.env: %s is not set", k.Env)
		}
		versions, err := keystore.ParseKeyring([]byte(text))
		if err != nil {
			return nil, fmt.Errorf("keystore.env %s: %w", k.Env, err)
		}
		return keystore.StaticSource(versions), nil
	case "vault":
		tok, err := k.Vault.Token.resolve(env)
		if err != nil {
			return nil, fmt.Errorf("keystore.vault.token: %w", err)
		}
		vc, err := vault.NewClient(&vault.Config{Address: k.Vault.Address, Timeout: 30 * time.Second, MaxRetries: 2})
		if err != nil {
			return nil, fmt.Errorf("keystore.vault: %w", err)
		}
		vc.SetToken(string(tok))
		clear(tok)
		src := keystore.VaultTransitSource{Client: vc, Mount: k.Vault.Mount, Key: k.Vault.Key, KV: kv}
		created, err := src.Init(ctx)
		if err != nil {
			return nil, fmt.Errorf("keystore.vault: %w", err)
		}
		if created {
			logger.Info("keystore: created master key version 1, stored wrapped by Vault transit", "transit_key", k.Vault.Key)
		}
		return src, nil
	}
	if cfg.MasterKey != nil {
		key, err := masterKey(cfg, env, logger, stderr)
		if err != nil {
			return nil, err
		}
		return keystore.StaticSource{1: key}, nil
	}
	// The development key: created as one bare key; rotate-master turns it into a keyring file.
	path := filepath.Join(cfg.DataDir, devMasterKeyFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		key, err := masterKey(cfg, env, logger, stderr)
		if err != nil {
			return nil, err
		}
		clear(key)
	} else {
		devKeyWarning(path, false, logger, stderr)
	}
	return keystore.FileSource{Path: path}, nil
}

// openKeystore loads the master key versions and returns the keystore (format 3, per-tenant
// salts in kv).
func openKeystore(ctx context.Context, src keystore.MasterKeySource, kv keystore.KV) (*keystore.Keystore, error) {
	versions, err := src.Load(ctx)
	if err != nil {
		return nil, err
	}
	ring, err := keystore.NewKeyringFrom(versions)
	for _, v := range versions {
		clear(v)
	}
	if err != nil {
		return nil, err
	}
	return keystore.NewWithSalts(ring, kv), nil
}

// keyVerifier checks provider keys against the providers' APIs (or the configured URLs).
func keyVerifier(cfg *Config) keystore.Verifier {
	eps := keystore.DefaultEndpoints()
	for p, u := range cfg.Keystore.VerifyURLs {
		ep, ok := eps[p]
		if !ok {
			ep = keystore.Endpoint{Header: "Authorization", Prefix: "Bearer "}
		}
		ep.URL = u
		eps[p] = ep
	}
	return &keystore.HTTPVerifier{Endpoints: eps}
}

// keyServices are the keystore's parts serve runs: the key records and their rotation.
type keyServices struct {
	keys    *keystore.Keys
	rotator *keystore.Rotator
}

func newKeyServices(cfg *Config, env func(string) string, ks *keystore.Keystore, kv keystore.KV, src keystore.MasterKeySource,
	sink keystore.Auditor, logger *slog.Logger, targets ...keystore.Target) (*keyServices, error) {
	onReseal, err := rotationFailpoint(env)
	if err != nil {
		return nil, err
	}
	keys, err := keystore.NewKeys(keystore.KeysConfig{Keystore: ks, KV: kv, Audit: sink, Verifier: keyVerifier(cfg)})
	if err != nil {
		return nil, err
	}
	// On the shared Redis store, rotation jobs run under leases: one replica at a time.
	rot, err := keystore.NewRotator(keystore.RotatorConfig{Keystore: ks, KV: kv, Source: src, Logger: logger,
		Targets: append([]keystore.Target{keys}, targets...), Shared: cfg.Store.Backend == backendRedis,
		LeaseTTL: cfg.Cluster.LeaseTTL, OnReseal: onReseal})
	if err != nil {
		return nil, err
	}
	return &keyServices{keys: keys, rotator: rot}, nil
}

// checkpointKeyTarget puts the audit checkpoint signing key, sealed in the keystore, under
// key rotation with the tenants' records.
func checkpointKeyTarget(kv keystore.KV) keystore.Target {
	return keystore.ValueTarget{KV: kv, Bucket: ckBucket, Key: ckRecord, Tenant: ckTenant, Record: ckRecord, Purpose: ckPurpose}
}
