package cloudflare

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/cloudflare/cloudflare-go/v7/dns"
	"github.com/cloudflare/cloudflare-go/v7/option"
	"github.com/cloudflare/cloudflare-go/v7/zero_trust"
	"golang.org/x/time/rate"

	"github.com/moltgate/moltgate/keystore"
)

// Errors callers test with errors.Is.
var (
	// ErrInvalidID: a gateway id that makes no DNS label.
	ErrInvalidID = errors.New("cloudflare: invalid gateway id")
	// ErrInvalidIngress: an ingress hostname other than the gateway's, or a service that is
	// not plain HTTP to a loopback port.
	ErrInvalidIngress = errors.New("cloudflare: invalid ingress")
	// ErrNotFound: the resource does not exist (a step it needs has not run).
	ErrNotFound = errors.New("cloudflare: not found")
	// ErrUnknownResult: a create failed in a way that may have created the resource, and a
	// lookup did not find it. Run the ensure again later: it looks up before it creates.
	ErrUnknownResult = errors.New("cloudflare: create result unknown")
	// ErrRateLimited: the API answered 429 with a Retry-After longer than MaxRetryAfter, or
	// kept answering 429.
	ErrRateLimited = errors.New("cloudflare: rate limited")
	// ErrUnauthorized: the API refused the token (401, 403, or code 10000).
	ErrUnauthorized = errors.New("cloudflare: token refused")
	// ErrNameTaken: the API says the tunnel name is taken, yet no live tunnel of that name
	// is visible to the account.
	ErrNameTaken = errors.New("cloudflare: name taken")
	// ErrDrift: what exists is not what the driver made and not the driver's to change: a
	// DNS record of the gateway's hostname that points elsewhere and is not marked as the
	// driver's, a hostname routed to another tunnel (code 1033), an Access application of
	// the hostname under another name, a locally managed tunnel under the gateway's name.
	// The error is a *DriftError.
	ErrDrift = errors.New("cloudflare: drift")
)

// API error codes the driver reacts to.
const (
	codeAuth             = 10000
	codeTunnelNameTaken  = 1013
	codeHostnameOnTunnel = 1033
	codeRecordConflict   = 81053
	codeRecordExists     = 81057
)

// Config sets up a Driver. Zero fields take the documented defaults.
type Config struct {
	// AccountID is the Cloudflare account holding tunnels and Access. Required.
	AccountID string
	// ZoneID is the zone holding GatewayDomain's DNS records. Required.
	ZoneID string
	// GatewayDomain is the domain gateways get hostnames in: <gateway id>.<GatewayDomain>.
	// It is the zone's name or a name in it. Required.
	GatewayDomain string
	// APIToken is the API token, with Tunnel, DNS and Access edit rights. Required. It is
	// sent only as the Authorization header.
	APIToken keystore.Secret
	// BaseURL is the API v4 base. Default https://api.cloudflare.com/client/v4/.
	// CLOUDFLARE_* environment variables are never read.
	BaseURL string
	// NamePrefix starts the names of the gateway's tunnel, Access application and Access
	// policy: NamePrefix + gateway id. Default "mg-".
	NamePrefix string
	// ServiceTokenDuration is the lifetime of service tokens EnsureServiceToken creates, in
	// Cloudflare's syntax ("8760h" or "forever"). Default "8760h".
	ServiceTokenDuration string
	// RequestTimeout bounds one API call. Default 30 s.
	RequestTimeout time.Duration
	// Attempts is how many times a call is tried when it may be repeated. Default 5.
	Attempts int
	// MaxRetryAfter is the longest Retry-After waited for in place; a longer one fails the
	// call with ErrRateLimited. Default 60 s.
	MaxRetryAfter time.Duration
	// RateLimit requests per RatePeriod, of which RateBurst may go at once, is the
	// client-side budget of the token: Cloudflare allows 1,200 per 5 minutes per token, and
	// the defaults (1,100 per 5 min, burst 100) never exceed it in any 5 minutes. Share one
	// Driver per token.
	RateLimit  int
	RatePeriod time.Duration
	RateBurst  int
	// PageSize is per_page of list calls. Default 50.
	PageSize int
	// Transport carries the requests. Default a clone of http.DefaultTransport.
	Transport http.RoundTripper
}

var idRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// hostRE is a lowercase DNS name of at least two labels.
var hostRE = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// validate fills in defaults and reports every problem at once, naming the field.
func (c *Config) validate() error {
	setDefault(&c.BaseURL, "https://api.cloudflare.com/client/v4/")
	setDefault(&c.NamePrefix, "mg-")
	setDefault(&c.ServiceTokenDuration, "8760h")
	setDefault(&c.RequestTimeout, 30*time.Second)
	setDefault(&c.Attempts, 5)
	setDefault(&c.MaxRetryAfter, 60*time.Second)
	setDefault(&c.RateLimit, 1100)
	setDefault(&c.RatePeriod, 5*time.Minute)
	setDefault(&c.RateBurst, 100)
	setDefault(&c.PageSize, 50)
	c.GatewayDomain = strings.ToLower(strings.TrimSuffix(c.GatewayDomain, "."))
	if !strings.HasSuffix(c.BaseURL, "/") {
		c.BaseURL += "/"
	}

	var errs []error
	if c.AccountID == "" {
		errs = append(errs, errors.New("account_id: empty"))
	}
	if c.ZoneID == "" {
		errs = append(errs, errors.New("zone_id: empty"))
	}
	if !hostRE.MatchString(c.GatewayDomain) {
		errs = append(errs, fmt.Errorf("gateway_domain: %q is not a domain name", c.GatewayDomain))
	}
	if len(c.APIToken) == 0 {
		errs = append(errs, errors.New("api_token: empty"))
	}
	if u, err := url.Parse(c.BaseURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Errorf("base_url: %q is not an http(s) URL", c.BaseURL))
	}
	if !idRE.MatchString(strings.TrimSuffix(c.NamePrefix, "-")) {
		errs = append(errs, fmt.Errorf("name_prefix: %q: lowercase letters, digits and dashes", c.NamePrefix))
	}
	for name, d := range map[string]time.Duration{"request_timeout": c.RequestTimeout, "max_retry_after": c.MaxRetryAfter, "rate_period": c.RatePeriod} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s: negative", name))
		}
	}
	for name, n := range map[string]int{"attempts": c.Attempts, "rate_limit": c.RateLimit, "rate_burst": c.RateBurst, "page_size": c.PageSize} {
		if n < 1 {
			errs = append(errs, fmt.Errorf("%s: under 1", name))
		}
	}
	return errors.Join(errs...)
}

func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// Driver provisions a gateway's edge on Cloudflare: a remotely managed tunnel whose
// ingress sends the gateway's hostname to the gateway on loopback, a proxied CNAME of the
// hostname to the tunnel, and an Access application on the hostname that admits only a
// service token. Every operation is an idempotent "ensure": it looks up by a name derived
// from the gateway id, creates what is missing, and adopts what it finds. Its methods are
// safe for concurrent use on different gateways; the provisioner serializes work on one.
type Driver struct {
	cfg      Config
	log      *slog.Logger
	limiter  *rate.Limiter
	tunnels  *zero_trust.TunnelCloudflaredService
	records  *dns.RecordService
	tokens   *zero_trust.AccessServiceTokenService
	policies *zero_trust.AccessPolicyService
	apps     *zero_trust.AccessApplicationService
}

// New returns a Driver. log receives step-level events and never a secret; nil discards.
func New(cfg Config, log *slog.Logger) (*Driver, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("cloudflare: config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	transport := cfg.Transport
	if transport == nil {
		transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	d := &Driver{
		cfg:     cfg,
		log:     log,
		limiter: rate.NewLimiter(rate.Every(cfg.RatePeriod/time.Duration(cfg.RateLimit)), cfg.RateBurst),
	}
	// The services are built from explicit options, not by cloudflare.NewClient: that one
	// reads CLOUDFLARE_* environment variables (a stray CLOUDFLARE_API_KEY would be sent
	// along) and links every one of the SDK's 120-odd service packages.
	opts := []option.RequestOption{
		option.WithHTTPClient(&http.Client{Transport: transport}),
		option.WithBaseURL(cfg.BaseURL),
		option.WithAPIToken(string(cfg.APIToken)),
		// The driver retries itself: the SDK's retries repeat creates after a 5xx or a
		// timeout, which makes a second DNS record or service token.
		option.WithMaxRetries(0),
		option.WithMiddleware(d.limit),
	}
	d.tunnels = zero_trust.NewTunnelCloudflaredService(opts...)
	d.records = dns.NewRecordService(opts...)
	d.tokens = zero_trust.NewAccessServiceTokenService(opts...)
	d.policies = zero_trust.NewAccessPolicyService(opts...)
	d.apps = zero_trust.NewAccessApplicationService(opts...)
	return d, nil
}

// TunnelName is the name of gateway id's tunnel, Access application and Access policy:
// NamePrefix + id, or ErrInvalidID.
func (d *Driver) TunnelName(gatewayID string) (string, error) {
	if !idRE.MatchString(gatewayID) || len(gatewayID) > 63 {
		return "", fmt.Errorf("%w: %q: want lowercase letters, digits and inner dashes, at most 63 characters", ErrInvalidID, gatewayID)
	}
	return d.cfg.NamePrefix + gatewayID, nil
}

// Hostname is gateway id's public hostname: id.GatewayDomain, or ErrInvalidID.
func (d *Driver) Hostname(gatewayID string) (string, error) {
	if _, err := d.TunnelName(gatewayID); err != nil {
		return "", err
	}
	return gatewayID + "." + d.cfg.GatewayDomain, nil
}

// GatewayDomain is the domain of the gateways' hostnames, lowercase, without a final dot.
func (d *Driver) GatewayDomain() string { return d.cfg.GatewayDomain }

// names returns the tunnel/Access name and hostname of a gateway.
func (d *Driver) names(gatewayID string) (name, host string, err error) {
	if name, err = d.TunnelName(gatewayID); err != nil {
		return "", "", err
	}
	host, _ = d.Hostname(gatewayID)
	return name, host, nil
}

// recordComment marks the DNS record of a gateway as the driver's: only a record with it
// is ever repointed or deleted.
func recordComment(gatewayID string) string { return "moltgate gateway " + gatewayID }

// tunnelTarget is the CNAME target of a tunnel.
func tunnelTarget(tunnelID string) string { return tunnelID + ".cfargotunnel.com" }
