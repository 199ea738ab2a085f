package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Issue 14: the provisioner's configuration: defaults, and every problem named at once.
func TestProvisionerConfig(t *testing.T) {
	cfg, err := loadConfig(writeConfig(t, "data_dir: /var/lib/mg\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	pc := cfg.Provisioner
	if pc.DefaultDriver != "local" || pc.Local.OpenClawBin != defaultOpenClawBin || pc.Local.Dir != filepath.Join("/var/lib/mg", "gateways") {
		t.Fatalf("defaults: %+v", pc)
	}
	cfg, err = loadConfig(writeConfig(t, "provisioner:\n  workers: 8\n  local: {openclaw_bin: /opt/oc/bin/openclaw, start_timeout: 3m}\n"), noEnv)
	if err != nil || cfg.Provisioner.Workers != 8 || cfg.Provisioner.Local.OpenClawBin != "/opt/oc/bin/openclaw" ||
		cfg.Provisioner.Local.StartTimeout != 3*time.Minute {
		t.Fatalf("set: %+v %v", cfg.Provisioner, err)
	}
	_, err = loadConfig(writeConfig(t, `
provisioner:
  workers: -1
  lease_ttl: 1s
  default_driver: k8s
  local: {start_timeout: -1s}
`), noEnv)
	for _, want := range []string{"provisioner.workers", "provisioner.lease_ttl", "provisioner.default_driver", "provisioner.local.start_timeout"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
	if _, err := loadConfig(writeConfig(t, "provisioner:\n  local: {openclaw: x}\n"), noEnv); err == nil || !strings.Contains(err.Error(), "openclaw") {
		t.Errorf("unknown key accepted: %v", err)
	}
}

// Issue 14: the fly driver's configuration (provisioner.fly and provisioner.cloudflare):
// secrets by reference only, every problem named at once.
func TestFlyDriverConfig(t *testing.T) {
	cfg, err := loadConfig(writeConfig(t, `
provisioner:
  default_driver: fly
  fly: {org: acme-org, region: ams, token: {env: FLY_API_TOKEN}, base_url: "http://127.0.0.1:4280"}
  cloudflare: {account_id: acc, zone_id: zone, api_token: {file: /run/secrets/cf}, gateway_domain: origin.example.com}
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if f, c := cfg.Provisioner.Fly, cfg.Provisioner.Cloudflare; f.Org != "acme-org" || f.Token.Env != "FLY_API_TOKEN" ||
		c.APIToken.File != "/run/secrets/cf" || c.GatewayDomain != "origin.example.com" || cfg.Provisioner.DefaultDriver != "fly" {
		t.Fatalf("set: %+v %+v", f, c)
	}
	_, err = loadConfig(writeConfig(t, `
provisioner:
  default_driver: fly
  fly: {region: ams, token: {env: A, file: /b}, base_url: "ftp://x", start_timeout: -1s}
`), noEnv)
	for _, want := range []string{"provisioner.cloudflare: required", "provisioner.fly.org: required", "provisioner.fly.token: give exactly one",
		"provisioner.fly.base_url", "provisioner.fly.start_timeout"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %q: %v", want, err)
		}
	}
	_, err = loadConfig(writeConfig(t, "provisioner:\n  default_driver: fly\n  cloudflare: {account_id: a, zone_id: z, api_token: {env: X}}\n"), noEnv)
	for _, want := range []string{"provisioner.default_driver", "provisioner.cloudflare: set without provisioner.fly"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %q: %v", want, err)
		}
	}
	if _, err := loadConfig(writeConfig(t, "provisioner:\n  fly: {org: o, region: r, token: fo1_inline}\n"), noEnv); err == nil ||
		strings.Contains(err.Error(), "fo1_inline") || !strings.Contains(err.Error(), "provisioner.fly.token") {
		t.Errorf("inline token: got %v, want refused by key without echoing it", err)
	}
}
