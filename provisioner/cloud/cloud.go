package cloud

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"github.com/moltgate/moltgate/provisioner"
	"github.com/moltgate/moltgate/provisioner/cloudflare"
	"github.com/moltgate/moltgate/provisioner/fly"
)

// App secret names the driver sets besides fly.SecretGatewayToken and the provider keys
// (<PROVIDER>_API_KEY).
const (
	// SecretTunnelToken is the tunnel's connector token: cloudflared in the gateway image
	// reads it from TUNNEL_TOKEN.
	SecretTunnelToken = "TUNNEL_TOKEN"
)

// KV is where the service token is kept; store.Bolt and store.Redis implement it (Swap is
// a compare-and-swap: nil old means absent).
type KV interface {
	Get(bucket, key string) ([]byte, error)
	Swap(bucket, key string, old, new []byte) error
}

// Sealer seals the service token's secret; keystore.Keystore implements it.
type Sealer interface {
	Seal(tenant, record, purpose string, plaintext []byte) ([]byte, error)
	Open(tenant, record, purpose string, sealed []byte) ([]byte, error)
}

// Config sets up a Driver.
type Config struct {
	// ServiceTokenName names moltgate's Access service token. Default "moltgate".
	ServiceTokenName string
}

// Deps are the parts a Driver works with. All are required.
type Deps struct {
	Fly        *fly.Driver
	Cloudflare *cloudflare.Driver
	// KV and Sealer keep the service token: the provisioner's store and the keystore.
	KV     KV
	Sealer Sealer
	Logger *slog.Logger
}

// Driver is the "fly" provisioner driver: Fly Machines behind Cloudflare. Its methods are
// safe for concurrent use.
type Driver struct {
	cfg  Config
	deps Deps

	tokenMu sync.Mutex // one service token ensure at a time in this process
}

var (
	_ provisioner.Driver      = (*Driver)(nil)
	_ provisioner.SpecChecker = (*Driver)(nil)
	_ provisioner.Upgrader    = (*Driver)(nil)
)

// New returns a Driver.
func New(cfg Config, deps Deps) (*Driver, error) {
	if deps.Fly == nil || deps.Cloudflare == nil || deps.KV == nil || deps.Sealer == nil || deps.Logger == nil {
		return nil, errors.New("cloud: Fly, Cloudflare, KV, Sealer and Logger are required")
	}
	if cfg.ServiceTokenName == "" {
		cfg.ServiceTokenName = "moltgate"
	}
	return &Driver{cfg: cfg, deps: deps}, nil
}

// Steps implements provisioner.Driver.
func (d *Driver) Steps() []provisioner.Step {
	return []provisioner.Step{tunnelStep{d}, appStep{d}, volumeStep{d}, ipsStep{d}, secretsStep{d}, machineStep{d},
		dnsStep{d}, accessStep{d}}
}

// CheckSpec implements provisioner.SpecChecker: the image is pinned by digest, and the id
// makes a Fly app name and a hostname.
func (d *Driver) CheckSpec(s provisioner.Spec) error {
	var errs []error
	if s.Image == "" {
		errs = append(errs, errors.New("image: required by driver fly (repository@sha256:<64 hex digits>)"))
	} else if err := fly.ValidateImage(s.Image); err != nil {
		errs = append(errs, fmt.Errorf("image: %w", err))
	}
	if _, err := d.deps.Fly.AppName(s.ID); err != nil {
		errs = append(errs, fmt.Errorf("id: %w", err))
	} else if _, err := d.deps.Cloudflare.Hostname(s.ID); err != nil {
		errs = append(errs, fmt.Errorf("id: %w", err))
	}
	return errors.Join(errs...)
}

// Upgrade implements provisioner.Upgrader: the gateway's machine, rolled to image by the
// fly driver, which waits for its health checks. The tunnel, DNS and Access stay as they are.
func (d *Driver) Upgrade(ctx context.Context, id, image string) (previous string, err error) {
	return d.deps.Fly.Upgrade(ctx, id, image)
}

// service is the tunnel's ingress target: the gateway on loopback inside its machine.
func (d *Driver) service() string {
	return "http://127.0.0.1:" + strconv.Itoa(d.deps.Fly.GatewayPort())
}
