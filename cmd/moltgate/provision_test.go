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
