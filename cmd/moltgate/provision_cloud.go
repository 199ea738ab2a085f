package main

import (
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner/cloud"
	"github.com/moltgate/moltgate/provisioner/cloudflare"
	"github.com/moltgate/moltgate/provisioner/fly"
)

// FlyDriverConfig configures the fly driver: each gateway a Fly app whose machine, bound to
// loopback, is reached only through a Cloudflare tunnel (provisioner.cloudflare).
type FlyDriverConfig struct {
	// Org is the Fly organization that owns the gateways' apps. Required.
	Org string `yaml:"org"`
	// Region places volumes and machines, e.g. ams. Required.
	Region string `yaml:"region"`
	// Token is the Fly API token. Required.
	Token *SecretRef `yaml:"token"`
	// BaseURL is the Machines API. Default https://api.machines.dev.
	BaseURL string `yaml:"base_url"`
	// AppPrefix starts every app name (app names are global on Fly). Default mg-.
	AppPrefix string `yaml:"app_prefix"`
	// StartTimeout bounds waiting for a machine to be healthy. Default 5m.
	StartTimeout time.Duration `yaml:"start_timeout"`
}

// CloudflareConfig configures the tunnels, DNS records and Access applications of the fly
// driver's gateways.
type CloudflareConfig struct {
	// AccountID holds the tunnels and Access applications. Required.
	AccountID string `yaml:"account_id"`
	// ZoneID holds gateway_domain's DNS records. Required.
	ZoneID string `yaml:"zone_id"`
	// GatewayDomain is where the tunnels answer: <id>.<gateway_domain>, each guarded by an
	// Access application that admits only moltgate's service token. Default serve's
	// gateway_domain.
	GatewayDomain string `yaml:"gateway_domain"`
	// APIToken is an API token with Tunnel, DNS and Access edit rights. Required.
	APIToken *SecretRef `yaml:"api_token"`
	// BaseURL is the API v4 base. Default https://api.cloudflare.com/client/v4/.
	BaseURL string `yaml:"base_url"`
	// NamePrefix starts the names of tunnels, Access applications and policies. Default mg-.
	NamePrefix string `yaml:"name_prefix"`
	// ServiceTokenName names moltgate's Access service token. Default moltgate.
	ServiceTokenName string `yaml:"service_token_name"`
}

// validateCloud reports the problems of provisioner.fly and provisioner.cloudflare.
func (c *ProvisionerConfig) validateCloud() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("provisioner.%s: "+format, append([]any{key}, args...)...))
	}
	if c.Fly == nil {
		if c.Cloudflare != nil {
			bad("cloudflare", "set without provisioner.fly: only the fly driver uses it")
		}
		return errs
	}
	f := c.Fly
	if c.Cloudflare == nil {
		bad("cloudflare", "required by provisioner.fly: a tunnel is its gateways' only way in")
	}
	required := map[string]string{"fly.org": f.Org, "fly.region": f.Region}
	if cf := c.Cloudflare; cf != nil {
		required["cloudflare.account_id"], required["cloudflare.zone_id"] = cf.AccountID, cf.ZoneID
	}
	for key, v := range required {
		if v == "" {
			bad(key, "required")
		}
	}
	refs := map[string]*SecretRef{"fly.token": f.Token}
	urls := map[string]string{"fly.base_url": f.BaseURL}
	if cf := c.Cloudflare; cf != nil {
		refs["cloudflare.api_token"] = cf.APIToken
		urls["cloudflare.base_url"] = cf.BaseURL
	}
	for key, ref := range refs {
		if ref == nil {
			bad(key, "required (a secret reference: file or env)")
		} else if err := ref.validate(); err != nil {
			bad(key, "%v", err)
		}
	}
	for key, u := range urls {
		if p, err := url.Parse(u); u != "" && (err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "") {
			bad(key, "%q: want an http(s) URL", u)
		}
	}
	if f.StartTimeout < 0 {
		bad("fly.start_timeout", "negative")
	}
	return errs
}

// newCloudDriver builds the fly driver from its configuration, its secrets resolved.
func newCloudDriver(cfg *Config, env func(string) string, kv keystore.KV, ks *keystore.Keystore, logger *slog.Logger) (*cloud.Driver, error) {
	fc, cc := cfg.Provisioner.Fly, cfg.Provisioner.Cloudflare
	flyToken, err := fc.Token.resolve(env)
	if err != nil {
		return nil, fmt.Errorf("provisioner.fly.token: %w", err)
	}
	cfToken, err := cc.APIToken.resolve(env)
	if err != nil {
		return nil, fmt.Errorf("provisioner.cloudflare.api_token: %w", err)
	}
	fd, err := fly.New(fly.Config{Org: fc.Org, Region: fc.Region, Token: keystore.Secret(flyToken), BaseURL: fc.BaseURL,
		AppPrefix: fc.AppPrefix, StartTimeout: fc.StartTimeout}, logger)
	if err != nil {
		return nil, fmt.Errorf("provisioner.fly: %w", err)
	}
	domain := cc.GatewayDomain
	if domain == "" {
		domain = cfg.GatewayDomain
	}
	cd, err := cloudflare.New(cloudflare.Config{AccountID: cc.AccountID, ZoneID: cc.ZoneID, GatewayDomain: domain,
		APIToken: keystore.Secret(cfToken), BaseURL: cc.BaseURL, NamePrefix: cc.NamePrefix}, logger)
	if err != nil {
		return nil, fmt.Errorf("provisioner.cloudflare: %w", err)
	}
	return cloud.New(cloud.Config{ServiceTokenName: cc.ServiceTokenName},
		cloud.Deps{Fly: fd, Cloudflare: cd, KV: kv, Sealer: ks, Logger: logger})
}
