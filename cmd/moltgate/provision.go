package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner"
	"github.com/moltgate/moltgate/provisioner/cloud"
	"github.com/moltgate/moltgate/provisioner/local"
	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/registry"
)

// ProvisionerConfig configures the provisioner: gateways made on demand (gateway create).
type ProvisionerConfig struct {
	// Workers bounds the gateways worked on at once. Default 2.
	Workers int `yaml:"workers"`
	// LeaseTTL is how long a gateway's lease holds without a refresh. Default 30s.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// ResyncInterval is how often every gateway is checked (a dead process restarted, a
	// changed key delivered). Default 1m.
	ResyncInterval time.Duration `yaml:"resync_interval"`
	// DefaultDriver is the driver of a create that names none. Default local.
	DefaultDriver string `yaml:"default_driver"`
	// Local configures the local driver.
	Local LocalDriverConfig `yaml:"local"`
	// Fly turns on the fly driver (provision_cloud.go); Cloudflare is then required. Default off.
	Fly        *FlyDriverConfig  `yaml:"fly"`
	Cloudflare *CloudflareConfig `yaml:"cloudflare"`
}

// LocalDriverConfig configures the local driver: OpenClaw gateways on loopback.
type LocalDriverConfig struct {
	// OpenClawBin is the openclaw executable, with node in the same folder. Default
	// .cache/openclaw/node_modules/.bin/openclaw (where make run and make test install the
	// pinned versions), relative to the working directory.
	OpenClawBin string `yaml:"openclaw_bin"`
	// Dir holds one folder per gateway. Default <data_dir>/gateways.
	Dir string `yaml:"dir"`
	// StartTimeout bounds a gateway's start. Default 2m.
	StartTimeout time.Duration `yaml:"start_timeout"`
	// OpenClawConfig is a JSON file merged into every gateway's openclaw.json (model
	// providers, agent defaults). Default none.
	OpenClawConfig string `yaml:"openclaw_config"`
}

const defaultOpenClawBin = ".cache/openclaw/node_modules/.bin/openclaw"

func (c *ProvisionerConfig) setDefaults(dataDir string) {
	if c.DefaultDriver == "" {
		c.DefaultDriver = "local"
	}
	if c.Local.OpenClawBin == "" {
		c.Local.OpenClawBin = defaultOpenClawBin
	}
	if c.Local.Dir == "" {
		c.Local.Dir = filepath.Join(dataDir, "gateways")
	}
}

func (c *ProvisionerConfig) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("provisioner.%s: "+format, append([]any{key}, args...)...))
	}
	if c.Workers < 0 {
		bad("workers", "negative")
	}
	for key, d := range map[string]time.Duration{"lease_ttl": c.LeaseTTL, "resync_interval": c.ResyncInterval,
		"local.start_timeout": c.Local.StartTimeout} {
		if d < 0 {
			bad(key, "negative")
		}
	}
	if c.LeaseTTL != 0 && c.LeaseTTL < 3*time.Second {
		bad("lease_ttl", "%v: want at least 3s", c.LeaseTTL)
	}
	if c.DefaultDriver != "local" && (c.DefaultDriver != "fly" || c.Fly == nil) {
		bad("default_driver", "%q: want local, or fly with provisioner.fly set", c.DefaultDriver)
	}
	return append(errs, c.validateCloud()...)
}

// provisioning is the provisioner of a serve, with its local driver and, when configured,
// its fly driver.
type provisioning struct {
	prov  *provisioner.Provisioner
	local *local.Driver
	cloud *cloud.Driver
	keys  *lazyKeys
}

// newProvisioning builds the provisioner before the key services (their rotator must reach
// the gateway tokens it seals from the start); the tenant keys it reads are handed to it
// later, by setKeys, before anything runs.
func newProvisioning(cfg *Config, env func(string) string, kv keystore.KV, ks *keystore.Keystore, reg *registry.Registry,
	sink provisioner.Auditor, logger *slog.Logger, metrics prometheus.Registerer) (*provisioning, error) {
	pc := cfg.Provisioner
	extra := map[string]any{}
	if pc.Local.OpenClawConfig != "" {
		b, err := os.ReadFile(pc.Local.OpenClawConfig)
		if err != nil {
			return nil, fmt.Errorf("provisioner.local.openclaw_config: %w", err)
		}
		if err := json.Unmarshal(b, &extra); err != nil {
			return nil, fmt.Errorf("provisioner.local.openclaw_config %s: %w", pc.Local.OpenClawConfig, err)
		}
	}
	ld, err := local.New(local.Config{OpenClaw: pc.Local.OpenClawBin, Dir: pc.Local.Dir, Path: env("PATH"),
		StartTimeout: pc.Local.StartTimeout, OpenClawConfig: extra}, logger)
	if err != nil {
		return nil, err
	}
	if err := local.Installed(pc.Local.OpenClawBin); err != nil {
		logger.Warn("local gateways cannot start until OpenClaw is installed", "err", err)
	}
	drivers := map[string]provisioner.Driver{"local": ld}
	var cd *cloud.Driver
	if pc.Fly != nil {
		if cd, err = newCloudDriver(cfg, env, kv, ks, logger); err != nil {
			return nil, err
		}
		drivers["fly"] = cd
	}
	lk := &lazyKeys{}
	prov, err := provisioner.New(provisioner.Config{
		Drivers:        drivers,
		DefaultDriver:  pc.DefaultDriver,
		LeaseTTL:       pc.LeaseTTL,
		Workers:        pc.Workers,
		ResyncInterval: pc.ResyncInterval,
		Probe:          throughProxy(cfg),
	}, provisioner.Deps{KV: kv, Sealer: ks, Registry: reg, Audit: sink, Keys: lk, Opener: lk,
		Logger: logger, Metrics: metrics})
	if err != nil {
		return nil, err
	}
	return &provisioning{prov: prov, local: ld, cloud: cd, keys: lk}, nil
}

// keyTargets are what key rotation reseals in the provisioner: the gateway tokens, and the
// fly driver's service token.
func (p *provisioning) keyTargets() []keystore.Target {
	if p.cloud != nil {
		return []keystore.Target{p.prov, p.cloud}
	}
	return []keystore.Target{p.prov}
}

// upstream is the transport to gateways: a token rotation in flight retries a 401 with the
// gateway's other token; requests to the fly driver's gateways carry moltgate's Access
// service token.
func (p *provisioning) upstream(next http.RoundTripper) http.RoundTripper {
	if p.cloud != nil {
		next = p.cloud.Transport(next)
	}
	return p.prov.Transport(next)
}

// wsClient dials gateways' sockets: nil (the relay's default) unless the fly driver's
// gateways need moltgate's Access service token on the handshake.
func (p *provisioning) wsClient() *http.Client {
	if p.cloud == nil {
		return nil
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: p.cloud.Transport(&http.Transport{Proxy: nil})}
}

// setKeys gives the provisioner the tenants' keys: it reads which are active, and opens
// them through an Opener acting as the provisioner (each open a secret.open event).
func (p *provisioning) setKeys(keys *keystore.Keys, sink keystore.Auditor) error {
	o, err := keystore.NewOpener(keys, audit.Actor{Kind: "system", ID: "provisioner"}, keystore.ReasonProvision, sink)
	if err != nil {
		return err
	}
	p.keys.keys.Store(keys)
	p.keys.opener.Store(o)
	// A key activated or revoked reaches the tenant's gateways at once, not at the next resync.
	keys.Subscribe(func(_ context.Context, tenant string) { p.prov.WakeTenant(tenant) })
	return nil
}

// run reconciles until ctx ends; then, once the listeners have drained (drained closed),
// it stops the local gateways, so requests in flight to them finish first.
func (p *provisioning) run(ctx context.Context, drained <-chan struct{}, timeout time.Duration) error {
	err := p.prov.Run(ctx)
	<-drained
	cctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return errors.Join(err, p.local.Close(cctx))
}

// lazyKeys are the keystore's keys and opener, set once they exist.
type lazyKeys struct {
	keys   atomic.Pointer[keystore.Keys]
	opener atomic.Pointer[keystore.Opener]
}

var errKeysNotReady = errors.New("provisioner: tenant keys not available yet")

func (l *lazyKeys) Active(tenant string) (map[string]keystore.APIKey, error) {
	k := l.keys.Load()
	if k == nil {
		return nil, errKeysNotReady
	}
	return k.Active(tenant)
}

func (l *lazyKeys) Open(ctx context.Context, tenant, id string) (keystore.Secret, error) {
	o := l.opener.Load()
	if o == nil {
		return nil, errKeysNotReady
	}
	return o.Open(ctx, tenant, id)
}

// throughProxy is the provisioner's last step: a gateway is ready when GET /readyz on its
// host answers 200 through this moltgate's own proxy listener, with its token, as any
// request would reach it (route, identify, decide, forward).
func throughProxy(cfg *Config) func(ctx context.Context, id string, token keystore.Secret) error {
	host, port, _ := net.SplitHostPort(cfg.Listen)
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	base := "http://" + net.JoinHostPort(host, port)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	return func(ctx context.Context, id string, token keystore.Secret) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
		if err != nil {
			return err
		}
		req.Host = id + "." + cfg.GatewayDomain
		req.Header.Set("Authorization", "Bearer "+string(token))
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /readyz through moltgate: %s", resp.Status)
		}
		return nil
	}
}

// provisionFlags are the flags of the provisioning verbs of `moltgate gateway`.
type provisionFlags struct {
	driver, image *string
	noWait        *bool
	timeout       *time.Duration
}

func newProvisionFlags(fs *flag.FlagSet) *provisionFlags {
	return &provisionFlags{
		driver:  fs.String("driver", "", "provisioning driver: local or fly (create; default: the server's)"),
		image:   fs.String("image", "", "gateway image reference, pinned by digest (create, upgrade; fly)"),
		noWait:  fs.Bool("no-wait", false, "return once recorded, without waiting (create, destroy, rotate-token)"),
		timeout: fs.Duration("timeout", 10*time.Minute, "how long to wait (create, destroy, rotate-token, upgrade)"),
	}
}

// provisionCommand runs the provisioning verbs: create, destroy, rotate-token, status. It
// reports whether verb was one of them.
func provisionCommand(ctx context.Context, verb string, rest []string, f *provisionFlags, id, tenant, owner string,
	jsonOut bool, c *admin.Client, stdout, stderr io.Writer) (bool, error) {
	one := func(form string) (string, error) {
		if len(rest) != 1 {
			return "", usageError{"usage: moltgate gateway " + form}
		}
		return rest[0], nil
	}
	var (
		p    admin.Provision
		err  error
		gone bool // wait until the gateway is forgotten (destroy)
	)
	switch verb {
	case "create":
		if len(rest) != 0 || id == "" || tenant == "" || owner == "" {
			return true, usageError{"usage: moltgate gateway create --id ID --tenant T --owner USER [--driver local|fly] [--image REF] [--no-wait]"}
		}
		p, err = c.Provision(ctx, id, admin.ProvisionRequest{Tenant: tenant, Owner: owner, Driver: *f.driver, Image: *f.image})
	case "destroy":
		if id, err = one("destroy ID [--no-wait]"); err != nil {
			return true, err
		}
		p, err = c.Destroy(ctx, id)
		gone = true
	case "rotate-token":
		if id, err = one("rotate-token ID [--no-wait]"); err != nil {
			return true, err
		}
		p, err = c.RotateToken(ctx, id)
	case "status":
		if id, err = one("status ID"); err != nil {
			return true, err
		}
		if p, err = c.ProvisionStatus(ctx, id); err != nil {
			return true, err
		}
		if jsonOut {
			return true, printJSON(stdout, p)
		}
		printProvision(stdout, p)
		return true, nil
	default:
		return false, nil
	}
	if err != nil {
		return true, err
	}
	if jsonOut && *f.noWait {
		return true, printJSON(stdout, p)
	}
	fmt.Fprintf(stderr, "%s: %s for tenant %s (driver %s, generation %d)\n", p.Spec.ID, verbDoing[verb], p.Spec.Tenant,
		p.Spec.Driver, p.Spec.Generation)
	if *f.noWait {
		printProvision(stdout, p)
		return true, nil
	}
	wctx, cancel := context.WithTimeout(ctx, *f.timeout)
	defer cancel()
	p, err = waitProvision(wctx, c, p, gone, stderr)
	if err != nil {
		return true, err
	}
	if jsonOut {
		return true, printJSON(stdout, p)
	}
	switch {
	case gone:
		fmt.Fprintf(stdout, "%s destroyed: its resources are gone and it is forgotten\n", id)
	case p.URL != "":
		fmt.Fprintf(stdout, "%s is ready and answers through moltgate at %s\n", p.Spec.ID, p.URL)
	default:
		fmt.Fprintf(stdout, "%s is ready and answers through moltgate\n", p.Spec.ID)
	}
	return true, nil
}

var verbDoing = map[string]string{"create": "provisioning", "destroy": "destroying", "rotate-token": "rotating its token"}

// waitProvision polls the gateway's status, printing each step as it starts, ends or
// fails, until the spec generation p asked for is reached (or, with gone, until the gateway
// is forgotten).
func waitProvision(ctx context.Context, c *admin.Client, p admin.Provision, gone bool, stderr io.Writer) (admin.Provision, error) {
	start := time.Now()
	want := p.Spec.Generation
	// What each step showed last: its state, when its last attempt started, its error. The
	// first answer is the baseline: what was there before this command.
	seen := map[string]string{}
	key := func(s provisioner.StepStatus) string {
		return string(s.State) + " " + s.Started.String() + " " + s.Error
	}
	var order []string // the steps in the order shown (a destroy's: reverse)
	for _, s := range p.Steps {
		seen[s.Name] = key(s)
		order = append(order, s.Name)
	}
	say := func(format string, args ...any) {
		fmt.Fprintf(stderr, "  [%6.1fs] "+format+"\n", append([]any{time.Since(start).Seconds()}, args...)...)
	}
	lastErr := p.Error
	for {
		present := map[string]bool{}
		for _, s := range p.Steps {
			present[s.Name] = true
		}
		for _, name := range order {
			if _, ok := seen[name]; ok && !present[name] && gone { // a destroyed step's record goes with it
				delete(seen, name)
				say("%-16s removed", name)
			}
		}
		for _, s := range p.Steps {
			if k := key(s); seen[s.Name] != k {
				seen[s.Name] = k
				line := string(s.State)
				if s.Op == provisioner.OpDestroy && s.State == provisioner.StepPending {
					line = "removing"
				}
				if s.Error != "" {
					line += fmt.Sprintf(" (attempt %d failed: %s)", s.Attempts, s.Error)
				}
				say("%-16s %s", s.Name, line)
			}
		}
		if p.Error != "" && p.Error != lastErr {
			say("retrying after: %s", p.Error)
		}
		lastErr = p.Error
		if !gone && p.Phase == provisioner.PhaseReady && p.ObservedGeneration >= want {
			return p, nil
		}
		t := time.NewTimer(250 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return p, fmt.Errorf("%s: still %s: %w (moltgate goes on; see `moltgate gateway status %s`)", p.Spec.ID, p.Phase, ctx.Err(), p.Spec.ID)
		case <-t.C:
		}
		next, err := c.ProvisionStatus(ctx, p.Spec.ID)
		var ae *admin.APIError
		if gone && errors.As(err, &ae) && ae.Status == http.StatusNotFound {
			for _, name := range order {
				if _, ok := seen[name]; ok {
					say("%-16s removed", name)
				}
			}
			return p, nil
		}
		if err != nil {
			return p, err
		}
		p = next
	}
}

// printDrift prints what the drift check found of a provisioned gateway's resources.
func printDrift(w io.Writer, p admin.Provision) {
	for _, d := range p.Drift {
		state := "not repaired"
		if !d.Repaired.IsZero() {
			state = "repaired " + d.Repaired.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "drift\t%s %s: %s (found %s, %s)\n", d.Step, d.Kind, d.Detail, d.Found.Format(time.RFC3339), state)
	}
}

func printProvision(w io.Writer, p admin.Provision) {
	fmt.Fprintf(w, "id\t%s\ntenant\t%s\nowner\t%s\ndriver\t%s\nphase\t%s\ngeneration\t%d (observed %d)\ntoken generation\t%d\n",
		p.Spec.ID, p.Spec.Tenant, p.Spec.Owner, p.Spec.Driver, p.Phase, p.Spec.Generation, p.ObservedGeneration, p.TokenGeneration)
	if p.URL != "" {
		fmt.Fprintf(w, "url\t%s\n", p.URL)
	}
	if p.Upstream != "" {
		fmt.Fprintf(w, "upstream\t%s\n", p.Upstream)
	}
	printImage(w, p)
	for _, s := range p.Steps {
		fmt.Fprintf(w, "step\t%-16s %s", s.Name, s.State)
		if s.Error != "" {
			fmt.Fprintf(w, " (attempt %d: %s)", s.Attempts, s.Error)
		}
		fmt.Fprintln(w)
	}
	printDrift(w, p)
	if p.Error != "" {
		fmt.Fprintf(w, "error\t%s (%d failed passes; retrying)\n", p.Error, p.Failures)
	}
}
