package cloudflare

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/cloudflare/cloudflare-go/v7/packages/pagination"
	"github.com/cloudflare/cloudflare-go/v7/shared"
	"github.com/cloudflare/cloudflare-go/v7/zero_trust"

	"github.com/moltgate/moltgate/keystore"
)

// Tunnel is a gateway's remotely managed Cloudflare tunnel.
type Tunnel struct {
	ID        string
	Name      string
	CreatedAt time.Time
}

// catchAll is the service of the last ingress rule: anything but the gateway's hostname
// gets a 404 at the edge of the tunnel.
const catchAll = "http_status:404"

// EnsureTunnel makes sure the gateway's tunnel (TunnelName) exists, managed remotely
// (config_src cloudflare). A live tunnel of that name is adopted, also when the create
// answers 1013 (name taken) or its answer is lost. A locally managed tunnel of that name
// is ErrDrift.
func (d *Driver) EnsureTunnel(ctx context.Context, gatewayID string) (Tunnel, error) {
	name, err := d.TunnelName(gatewayID)
	if err != nil {
		return Tunnel{}, err
	}
	t, err := d.lookupTunnel(ctx, name)
	if !errors.Is(err, ErrNotFound) {
		return t, err
	}
	var created *shared.CloudflareTunnel
	err = d.call(ctx, create, func(ctx context.Context) (err error) {
		p := zero_trust.TunnelCloudflaredNewParams{}
		p.AccountID.Value, p.AccountID.Present = d.cfg.AccountID, true
		p.Name.Value, p.Name.Present = name, true
		p.ConfigSrc.Value, p.ConfigSrc.Present = zero_trust.TunnelCloudflaredNewParamsConfigSrcCloudflare, true
		created, err = d.tunnels.New(ctx, p)
		return err
	})
	switch {
	case err == nil:
		d.log.LogAttrs(ctx, slog.LevelInfo, "cloudflare: created tunnel", slog.String("gateway", gatewayID), slog.String("tunnel", created.ID))
		return Tunnel{ID: created.ID, Name: created.Name, CreatedAt: created.CreatedAt}, nil
	case !hasCode(err, codeTunnelNameTaken) && !errors.Is(err, ErrUnknownResult):
		return Tunnel{}, fmt.Errorf("cloudflare: create tunnel %q: %w", name, err)
	}
	t, lerr := d.lookupTunnel(ctx, name)
	switch {
	case lerr == nil:
		d.log.LogAttrs(ctx, slog.LevelInfo, "cloudflare: adopted tunnel", slog.String("gateway", gatewayID), slog.String("tunnel", t.ID))
		return t, nil
	case errors.Is(lerr, ErrNotFound) && errors.Is(err, ErrUnknownResult):
		return Tunnel{}, fmt.Errorf("cloudflare: create tunnel %q: %w", name, err)
	case errors.Is(lerr, ErrNotFound):
		return Tunnel{}, fmt.Errorf("%w: tunnel %q: the API says it exists, the account lists none: %w", ErrNameTaken, name, err)
	}
	return Tunnel{}, lerr
}

// lookupTunnel finds the live tunnel named name: ErrNotFound when there is none, ErrDrift
// when it is locally managed. Cloudflare keeps names unique among live tunnels; deleted
// ones stay listed and are skipped.
func (d *Driver) lookupTunnel(ctx context.Context, name string) (Tunnel, error) {
	all, err := listAll(ctx, d, func(ctx context.Context, n, size int64) (*pagination.V4PagePaginationArray[shared.CloudflareTunnel], error) {
		p := zero_trust.TunnelCloudflaredListParams{}
		p.AccountID.Value, p.AccountID.Present = d.cfg.AccountID, true
		p.Name.Value, p.Name.Present = name, true
		p.IsDeleted.Value, p.IsDeleted.Present = false, true
		p.Page.Value, p.Page.Present = float64(n), true
		p.PerPage.Value, p.PerPage.Present = float64(size), true
		return d.tunnels.List(ctx, p)
	})
	if err != nil {
		return Tunnel{}, fmt.Errorf("cloudflare: list tunnels: %w", err)
	}
	for _, t := range all {
		if t.Name != name || !t.DeletedAt.IsZero() {
			continue
		}
		if t.ConfigSrc != shared.CloudflareTunnelConfigSrcCloudflare {
			return Tunnel{}, &DriftError{Findings: []Finding{{Resource: "tunnel", Name: name,
				Want: "config_src cloudflare", Got: "config_src " + string(t.ConfigSrc)}}}
		}
		return Tunnel{ID: t.ID, Name: t.Name, CreatedAt: t.CreatedAt}, nil
	}
	return Tunnel{}, fmt.Errorf("cloudflare: tunnel %q: %w", name, ErrNotFound)
}

// ConfigureIngress makes the gateway's tunnel route hostname to service, and everything
// else to a 404: ingress [{hostname, service}, {service: http_status:404}]. hostname is
// the gateway's Hostname (empty means that); service is plain HTTP to a loopback port,
// http://127.0.0.1:PORT, so the tunnel reaches the gateway and nothing else on its host
// (ErrInvalidIngress otherwise). A configuration that already says so is left alone.
func (d *Driver) ConfigureIngress(ctx context.Context, gatewayID, hostname, service string) error {
	name, host, err := d.names(gatewayID)
	if err != nil {
		return err
	}
	if hostname == "" {
		hostname = host
	}
	if hostname != host {
		return fmt.Errorf("%w: hostname %q: the gateway's is %q", ErrInvalidIngress, hostname, host)
	}
	if err := checkService(service); err != nil {
		return err
	}
	t, err := d.lookupTunnel(ctx, name)
	if err != nil {
		return fmt.Errorf("cloudflare: configure ingress: %w", err)
	}
	rules, err := d.ingress(ctx, t.ID)
	if err != nil {
		return err
	}
	if ingressIs(rules, host, service) {
		return nil
	}
	err = d.call(ctx, idempotent, func(ctx context.Context) error {
		p := zero_trust.TunnelCloudflaredConfigurationUpdateParams{}
		p.AccountID.Value, p.AccountID.Present = d.cfg.AccountID, true
		var route, last zero_trust.TunnelCloudflaredConfigurationUpdateParamsConfigIngress
		route.Hostname.Value, route.Hostname.Present = host, true
		route.Service.Value, route.Service.Present = service, true
		last.Service.Value, last.Service.Present = catchAll, true
		var c zero_trust.TunnelCloudflaredConfigurationUpdateParamsConfig
		c.Ingress.Value, c.Ingress.Present = []zero_trust.TunnelCloudflaredConfigurationUpdateParamsConfigIngress{route, last}, true
		p.Config.Value, p.Config.Present = c, true
		_, err := d.tunnels.Configurations.Update(ctx, t.ID, p)
		return err
	})
	if hasCode(err, codeHostnameOnTunnel) {
		return &DriftError{Findings: []Finding{{Resource: "ingress", Name: host, Want: "tunnel " + t.ID, Got: "routed to another tunnel (code 1033)"}}}
	}
	if err != nil {
		return fmt.Errorf("cloudflare: configure ingress of tunnel %s: %w", t.ID, err)
	}
	d.log.LogAttrs(ctx, slog.LevelInfo, "cloudflare: configured ingress", slog.String("gateway", gatewayID),
		slog.String("tunnel", t.ID), slog.String("hostname", host))
	return nil
}

// rule is one ingress rule as the driver compares it.
type rule struct{ hostname, service, path string }

// ingress reads the tunnel's ingress rules; none when it has no configuration yet.
func (d *Driver) ingress(ctx context.Context, tunnelID string) ([]rule, error) {
	var res *zero_trust.TunnelCloudflaredConfigurationGetResponse
	err := d.call(ctx, idempotent, func(ctx context.Context) (err error) {
		p := zero_trust.TunnelCloudflaredConfigurationGetParams{}
		p.AccountID.Value, p.AccountID.Present = d.cfg.AccountID, true
		res, err = d.tunnels.Configurations.Get(ctx, tunnelID, p)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cloudflare: get ingress of tunnel %s: %w", tunnelID, err)
	}
	var out []rule
	for _, r := range res.Config.Ingress {
		out = append(out, rule{r.Hostname, r.Service, r.Path})
	}
	return out, nil
}

// ingressIs reports whether rules are exactly [{host, service}, {catch-all 404}].
func ingressIs(rules []rule, host, service string) bool {
	return len(rules) == 2 && rules[0] == rule{hostname: host, service: service} && rules[1] == rule{service: catchAll}
}

// checkService accepts only http://127.0.0.1:PORT, http://[::1]:PORT or
// http://localhost:PORT: an ingress to any other address would let the tunnel reach
// services beside the gateway on its host or network.
func checkService(service string) error {
	u, err := url.Parse(service)
	if err == nil && u.Scheme == "http" && u.User == nil && (u.Path == "" || u.Path == "/") && u.RawQuery == "" && u.Fragment == "" {
		host, port, err := net.SplitHostPort(u.Host)
		p, perr := strconv.Atoi(port)
		ip := net.ParseIP(host)
		if err == nil && perr == nil && p > 0 && p < 65536 && (host == "localhost" || ip != nil && ip.IsLoopback()) {
			return nil
		}
	}
	return fmt.Errorf("%w: service %q: want http://127.0.0.1:PORT", ErrInvalidIngress, service)
}

// TunnelToken returns the connector token of the gateway's tunnel, for cloudflared on the
// gateway's host (cloudflared tunnel run --token). It is a secret: keep it in the
// keystore. Errors of this call carry the status only.
func (d *Driver) TunnelToken(ctx context.Context, gatewayID string) (keystore.Secret, error) {
	name, err := d.TunnelName(gatewayID)
	if err != nil {
		return nil, err
	}
	t, err := d.lookupTunnel(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("cloudflare: tunnel token: %w", err)
	}
	var tok *string
	err = d.call(ctx, idempotent, func(ctx context.Context) (err error) {
		p := zero_trust.TunnelCloudflaredTokenGetParams{}
		p.AccountID.Value, p.AccountID.Present = d.cfg.AccountID, true
		tok, err = d.tunnels.Token.Get(ctx, t.ID, p)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cloudflare: tunnel token of %s: %w", t.ID, err)
	}
	if tok == nil || *tok == "" {
		return nil, fmt.Errorf("cloudflare: tunnel token of %s: empty answer", t.ID)
	}
	return keystore.Secret(*tok), nil
}
