package main_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/provisioner"
	"github.com/moltgate/moltgate/provisioner/cftest"
	"github.com/moltgate/moltgate/provisioner/flytest"
	"github.com/moltgate/moltgate/proxy/admin"
)

// TestProvisionFlyKilledAndResumed: issue 14, the fly driver through the built binary
// against the fakes of Fly and Cloudflare. `gateway create --driver fly` starts the plan; the
// moltgate process is SIGKILLed while the machine boots (its launch done, its step not
// recorded as ended); a new moltgate on the same data directory takes over once the dead
// one's lease expires and finishes: exactly one of each resource on both clouds, one app
// create and one machine launch, and the gateway registered at its tunnel's hostname.
func TestProvisionFlyKilledAndResumed(t *testing.T) {
	fake, err := flytest.New(flytest.Config{Org: "moltgate", Token: "fo1_e2e-fly-token"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	cf, err := cftest.New(cftest.Config{Zone: "example.test", Token: "cf-e2e-api-token"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cf.Close)
	fake.HoldBoot(true) // the machine launches and stays "starting": the create is mid-way

	data := filepath.Join(t.TempDir(), "data")
	config := fmt.Sprintf(`
listen: @LISTEN@
admin_listen: @ADMIN@
data_dir: %s
admin_token: {file: @ADMINTOKEN@}
provisioner:
  lease_ttl: 3s
  resync_interval: 1s
  fly: {org: moltgate, region: ams, token: {env: MG_E2E_FLY_TOKEN}, base_url: "%s"}
  cloudflare: {account_id: acc-test, zone_id: zone-test, gateway_domain: gw.example.test, api_token: {env: MG_E2E_CF_TOKEN}, base_url: "%s"}
`, data, fake.URL, cf.BaseURL())
	// The SDK would read CLOUDFLARE_* by default: none may reach moltgate.
	env := []string{"MG_E2E_FLY_TOKEN=fo1_e2e-fly-token", "MG_E2E_CF_TOKEN=cf-e2e-api-token",
		"CLOUDFLARE_API_TOKEN=", "CLOUDFLARE_API_KEY=", "CLOUDFLARE_EMAIL=", "CLOUDFLARE_API_USER_SERVICE_KEY="}
	image := "registry.example.test/moltgate/gateway@sha256:" + strings.Repeat("ab", 32)

	first := startBinary(t, binary, env, config)
	out := first.cli(t, "gateway", "create", "--id", "fly1", "--tenant", "acme", "--owner", "user_fly_owner",
		"--driver", "fly", "--image", image, "--no-wait")
	if !strings.Contains(out, "fly1") {
		t.Fatalf("gateway create: %s", out)
	}
	waitUntil(t, "the machine launched", func() bool { return len(fake.Machines("mg-fly1")) == 1 })
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.cmd.Wait()
	fake.HoldBoot(false)

	second := startBinary(t, binary, env, config)
	var p admin.Provision
	waitUntil(t, "the gateway registered by the second moltgate", func() bool {
		p, err = second.admin().ProvisionStatus(t.Context(), "fly1")
		return err == nil && slices.ContainsFunc(p.Steps, func(s provisioner.StepStatus) bool {
			return s.Name == "register" && s.State == provisioner.StepDone
		})
	})
	if got := fake.Counts(); got != (flytest.Counts{Apps: 1, Volumes: 1, IPs: 2, Machines: 1, Secrets: 2, Leases: got.Leases}) {
		t.Errorf("fly: got %+v, want one app, volume, machine, two IPs and two secrets", got)
	}
	if got := cf.Counts(); got != (cftest.Counts{Tunnels: 1, Records: 1, ServiceTokens: 1, Policies: 1, Apps: 1}) {
		t.Errorf("cloudflare: got %+v, want one of each", got)
	}
	if a, l := fake.Calls(flytest.RouteCreateApp), fake.Calls(flytest.RouteLaunch); a != 1 || l != 1 {
		t.Errorf("app creates %d, machine launches %d: want one each (the second moltgate adopts)", a, l)
	}
	g, err := second.admin().Get(t.Context(), "fly1")
	if err != nil || g.Upstream != "https://fly1.gw.example.test" || g.Tenant != "acme" {
		t.Errorf("registry: got %+v (%v), want fly1 of acme at https://fly1.gw.example.test", g, err)
	}
	logs := ""
	for _, in := range []*instance{first, second} {
		b, _ := os.ReadFile(in.logPath)
		logs += string(b)
	}
	for _, s := range []string{"fo1_e2e-fly-token", "cf-e2e-api-token", cf.ServiceTokens()[0].ClientSecret} {
		if strings.Contains(logs, s) {
			t.Errorf("a log carries a secret (%.8s…)", s)
		}
	}
}
