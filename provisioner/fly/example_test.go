package fly_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner/fly"
	"github.com/moltgate/moltgate/provisioner/flytest"
)

// The provisioner core runs the steps in this order, recording each in its store before
// and after; every step is an ensure, so a rerun after a crash (or the reconciler's next
// pass) finishes the job with one of each resource. Destroy runs them backwards.
func Example() {
	ctx := context.Background()
	api, _ := flytest.New(flytest.Config{Org: "acme-org"}) // in production: the real Machines API
	defer api.Close()

	d, err := fly.New(fly.Config{
		Org:     "acme-org",
		Region:  "ams",
		Token:   keystore.Secret("fo1_token"), // resolved by cmd from a file or an env var
		BaseURL: api.URL,                      // default https://api.machines.dev
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Println(err)
		return
	}
	const gateway = "demo"
	app, err := d.EnsureApp(ctx, gateway)
	if errors.Is(err, fly.ErrNameTaken) {
		fmt.Println("choose another gateway id or app prefix:", err)
		return
	}
	vol, _ := d.EnsureVolume(ctx, gateway)
	ips, _ := d.EnsureIPs(ctx, gateway)
	// The gateway token and the tenant's active provider keys, opened from the keystore.
	version, _ := d.SetSecrets(ctx, gateway, map[string]keystore.Secret{
		fly.SecretGatewayToken: keystore.Secret("0f3c…"),
		"ANTHROPIC_API_KEY":    keystore.Secret("sk-ant-…"),
	})
	m, err := d.EnsureMachine(ctx, gateway, fly.MachineSpec{
		Image:          "registry.example.test/moltgate/gateway@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		SecretsVersion: version,
	})
	fmt.Println(app.Name, vol.Encrypted, ips.V6 != "" && ips.SharedV4 != "", m.State, m.SecretsVersion, err)

	// Later: gateway upgrade. A failed upgrade reports the image to roll back to.
	up, err := d.UpgradeMachine(ctx, gateway, fly.MachineSpec{
		Image:          "registry.example.test/moltgate/gateway@sha256:60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752",
		SecretsVersion: version,
	})
	if err != nil {
		_, _ = d.UpgradeMachine(ctx, gateway, fly.MachineSpec{Image: up.PreviousImage, SecretsVersion: version})
	}
	fmt.Println(up.PreviousImage == m.Image, err)

	// gateway destroy: nil only once everything is confirmed gone.
	fmt.Println(d.Destroy(ctx, gateway), api.Counts() == flytest.Counts{})
	// Output:
	// mg-demo true true started 1 <nil>
	// true <nil>
	// <nil> true
}
