package fly

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	fly "github.com/superfly/fly-go"
	"github.com/superfly/fly-go/flaps"
	"github.com/superfly/fly-go/tokens"

	"github.com/moltgate/moltgate/keystore"
)

// Errors callers test with errors.Is.
var (
	// ErrInvalidID: a gateway id that makes no valid Fly app name.
	ErrInvalidID = errors.New("fly: invalid gateway id")
	// ErrNameTaken: the gateway's app name is held by another organization (app names are
	// global on Fly). Choose another AppPrefix or gateway id; the driver never touches it.
	ErrNameTaken = errors.New("fly: app name held by another organization")
	// ErrUnauthorized: the API refused the token for the driver's own organization.
	ErrUnauthorized = errors.New("fly: token refused")
	// ErrNotFound: the resource does not exist (a step it needs has not run).
	ErrNotFound = errors.New("fly: not found")
	// ErrUnknownResult: a create failed in a way that may have created the resource, and a
	// lookup did not find it. Run the ensure again later: it looks up before it creates.
	ErrUnknownResult = errors.New("fly: create result unknown")
	// ErrRateLimited: the API answered 429 with a Retry-After longer than MaxRetryAfter,
	// or kept answering 429.
	ErrRateLimited = errors.New("fly: rate limited")
	// ErrLeaseHeld: another holder kept the machine's lease for all of LeaseWait.
	ErrLeaseHeld = errors.New("fly: machine lease held by another holder")
	// ErrLeaseLost: the machine's lease could not be refreshed while the driver worked.
	ErrLeaseLost = errors.New("fly: machine lease lost")
	// ErrImageNotPinned: an image reference without an @sha256: digest.
	ErrImageNotPinned = errors.New("fly: image not pinned by digest")
	// ErrMachineFailed: the machine did not start, or started without passing its checks,
	// within StartTimeout.
	ErrMachineFailed = errors.New("fly: machine did not become healthy")
)

// Environment the driver sets on every gateway machine; Config.Env may not set these.
const (
	// EnvBind binds the OpenClaw gateway to loopback: the Cloudflare tunnel inside the VM
	// is its only way in.
	EnvBind = "OPENCLAW_GATEWAY_BIND"
	// EnvPort is the gateway's loopback port.
	EnvPort = "OPENCLAW_GATEWAY_PORT"
	// EnvGatewayID names the gateway, for its logs.
	EnvGatewayID = "MOLTGATE_GATEWAY_ID"
)

// SecretGatewayToken is the app secret name under which the provisioner delivers the
// gateway token.
const SecretGatewayToken = "OPENCLAW_GATEWAY_TOKEN"

// Fixed names inside a gateway's app: the app is the gateway's alone, so they need not
// vary. Machine names are unique per app on Fly; volume names are not, so a volume is
// looked up by name before one is created.
const (
	volumeName  = "gateway_data"
	machineName = "gateway"
)

// Machine metadata keys the driver keeps on its machines.
const (
	metaGateway        = "moltgate_gateway"
	metaSecretsVersion = "moltgate_secrets_version"
)

// Config sets up a Driver. Zero fields take the documented defaults.
type Config struct {
	// Org is the slug of the Fly organization that owns the gateways' apps. Required.
	Org string
	// Region is where volumes and machines are placed, e.g. "ams". Required.
	Region string
	// Token is the Fly API token. Required. It is sent only as the Authorization header.
	Token keystore.Secret
	// BaseURL is the Machines API. Default https://api.machines.dev. It wins over the
	// FLY_FLAPS_BASE_URL environment variable flaps reads.
	BaseURL string
	// AppPrefix starts every app name: app = AppPrefix + gateway id. Default "mg-".
	AppPrefix string
	// Guest is the machine size. Default 1 shared CPU and 2048 MB.
	Guest fly.MachineGuest
	// VolumeSizeGB is the size of the gateway's data volume. Default 1.
	VolumeSizeGB int
	// MountPath is where the data volume is mounted. Default "/data".
	MountPath string
	// GatewayPort is the gateway's loopback port. Default 18789.
	GatewayPort int
	// Env is extra machine environment. Default none. EnvBind, EnvPort and EnvGatewayID
	// are the driver's.
	Env map[string]string
	// Checks are the machine's health checks: a machine is healthy when it is started and
	// every check passes. Default none (started is healthy).
	Checks map[string]fly.MachineCheck
	// RequestTimeout bounds one API call (but a wait). Default 30 s.
	RequestTimeout time.Duration
	// WaitTimeout is the timeout of one wait call, which Fly clamps to [1 s, 60 s] and
	// answers with 408 after it; the driver waits again. Default 60 s.
	WaitTimeout time.Duration
	// StartTimeout bounds waiting for a machine to be healthy, and for a destroyed app to
	// be gone. Default 5 min.
	StartTimeout time.Duration
	// LeaseTTL is the TTL of the machine leases the driver holds while it changes a
	// machine, in whole seconds; they are refreshed every third of it. Default 30 s.
	LeaseTTL time.Duration
	// LeaseWait is how long to wait for a lease another holder has. Default 30 s.
	LeaseWait time.Duration
	// Attempts is how many times a call is tried when it may be repeated. Default 5.
	Attempts int
	// MaxRetryAfter is the longest Retry-After waited for in place; a longer one fails the
	// call with ErrRateLimited. Default 60 s.
	MaxRetryAfter time.Duration
	// Transport carries the requests. Default a clone of http.DefaultTransport.
	Transport http.RoundTripper
}

var (
	idRE     = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	prefixRE = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	envRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// imageRE: a reference pinned by a sha256 digest, with or without a tag.
	imageRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._/:-]*@sha256:[a-f0-9]{64}$`)
)

// validate fills in defaults and reports every problem at once, naming the field.
func (c *Config) validate() error {
	if c.BaseURL == "" {
		c.BaseURL = "https://api.machines.dev"
	}
	if c.AppPrefix == "" {
		c.AppPrefix = "mg-"
	}
	if c.Guest.CPUs == 0 && c.Guest.MemoryMB == 0 && c.Guest.CPUKind == "" {
		c.Guest = fly.MachineGuest{CPUKind: "shared", CPUs: 1, MemoryMB: 2048}
	}
	setDefault(&c.VolumeSizeGB, 1)
	setDefault(&c.MountPath, "/data")
	setDefault(&c.GatewayPort, 18789)
	setDefault(&c.RequestTimeout, 30*time.Second)
	setDefault(&c.WaitTimeout, 60*time.Second)
	setDefault(&c.StartTimeout, 5*time.Minute)
	setDefault(&c.LeaseTTL, 30*time.Second)
	setDefault(&c.LeaseWait, 30*time.Second)
	setDefault(&c.Attempts, 5)
	setDefault(&c.MaxRetryAfter, 60*time.Second)

	var errs []error
	if c.Org == "" {
		errs = append(errs, errors.New("org: empty"))
	}
	if c.Region == "" {
		errs = append(errs, errors.New("region: empty"))
	}
	if len(c.Token) == 0 {
		errs = append(errs, errors.New("token: empty"))
	}
	if u, err := url.Parse(c.BaseURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Errorf("base_url: %q is not an http(s) URL", c.BaseURL))
	}
	if !prefixRE.MatchString(c.AppPrefix) {
		errs = append(errs, fmt.Errorf("app_prefix: %q: lowercase letters, digits and dashes, starting with a letter", c.AppPrefix))
	}
	if c.GatewayPort < 1 || c.GatewayPort > 65535 {
		errs = append(errs, fmt.Errorf("gateway_port: %d out of range", c.GatewayPort))
	}
	if !strings.HasPrefix(c.MountPath, "/") {
		errs = append(errs, fmt.Errorf("mount_path: %q is not absolute", c.MountPath))
	}
	for _, k := range slices.Sorted(maps.Keys(c.Env)) {
		switch {
		case k == EnvBind || k == EnvPort || k == EnvGatewayID:
			errs = append(errs, fmt.Errorf("env[%s]: set by the driver (the gateway binds loopback)", k))
		case !envRE.MatchString(k):
			errs = append(errs, fmt.Errorf("env[%s]: not a variable name", k))
		}
	}
	for name, d := range map[string]time.Duration{
		"request_timeout": c.RequestTimeout, "wait_timeout": c.WaitTimeout, "start_timeout": c.StartTimeout,
		"lease_wait": c.LeaseWait, "max_retry_after": c.MaxRetryAfter,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s: negative", name))
		}
	}
	if c.LeaseTTL < time.Second {
		errs = append(errs, errors.New("lease_ttl: under 1s"))
	}
	if c.VolumeSizeGB < 1 {
		errs = append(errs, errors.New("volume_size_gb: under 1"))
	}
	if c.Attempts < 1 {
		errs = append(errs, errors.New("attempts: under 1"))
	}
	return errors.Join(errs...)
}

func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// Driver provisions gateways on Fly.io through the Machines API, one app per gateway. Every
// operation is an idempotent "ensure": it looks up by a name derived from the gateway id,
// creates what is missing, and adopts what it finds. Its methods are safe for concurrent
// use on different gateways; the provisioner serializes work on one gateway.
type Driver struct {
	cfg    Config
	client *flaps.Client
	log    *slog.Logger
}

// New returns a Driver. log receives step-level events and never a secret; nil discards.
func New(cfg Config, log *slog.Logger) (*Driver, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("fly: config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	base, _ := url.Parse(cfg.BaseURL)
	next := cfg.Transport
	if next == nil {
		next = http.DefaultTransport.(*http.Transport).Clone()
	}
	client, err := flaps.NewWithOptions(context.Background(), flaps.NewClientOpts{
		UserAgent: "moltgate",
		Tokens:    tokens.Parse(string(cfg.Token)),
		// No Logger, on purpose: fly-go's logging transport writes request bodies, and
		// secrets travel in them.
		Transport: &transport{base: base, next: next},
	})
	if err != nil {
		return nil, fmt.Errorf("fly: client: %w", err)
	}
	return &Driver{cfg: cfg, client: client, log: log}, nil
}

// AppName is the Fly app of gateway id: AppPrefix + id, a valid app name (lowercase
// letters, digits and dashes, one DNS label) or ErrInvalidID.
func (d *Driver) AppName(gatewayID string) (string, error) {
	name := d.cfg.AppPrefix + gatewayID
	if !idRE.MatchString(gatewayID) || len(name) > 63 {
		return "", fmt.Errorf("%w: %q: want lowercase letters, digits and inner dashes, at most %d characters",
			ErrInvalidID, gatewayID, 63-len(d.cfg.AppPrefix))
	}
	return name, nil
}

// ValidateImage reports ErrImageNotPinned unless image names its content by digest
// (repository[:tag]@sha256:<64 hex>): a tag can be moved to other content behind the
// provisioner's back.
func ValidateImage(image string) error {
	if !imageRE.MatchString(image) {
		return fmt.Errorf("%w: %q: want repository@sha256:<64 hex digits>", ErrImageNotPinned, image)
	}
	return nil
}
