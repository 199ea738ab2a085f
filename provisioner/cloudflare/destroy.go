package cloudflare

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/cloudflare/cloudflare-go/v7/dns"
	"github.com/cloudflare/cloudflare-go/v7/zero_trust"
)

// Destroy removes the gateway's resources in the reverse order of their creation: its
// Access application (only if named TunnelName), Access policy, DNS record (only if it
// carries the driver's comment or points at the gateway's tunnel), then the tunnel with its
// configuration. Whatever is already gone (404) counts as done, so a Destroy after a
// half-finished create, or a second Destroy, finishes the job. It returns nil only once no
// live tunnel of the gateway's name is listed. Service tokens are left: see
// DeleteServiceToken.
func (d *Driver) Destroy(ctx context.Context, gatewayID string) error {
	if err := d.DestroyAccess(ctx, gatewayID); err != nil {
		return err
	}
	if err := d.DestroyDNS(ctx, gatewayID); err != nil {
		return err
	}
	return d.DestroyTunnel(ctx, gatewayID)
}

// DestroyAccess removes the gateway's Access application (only if named TunnelName) and
// its Access policy; what is gone counts as done.
func (d *Driver) DestroyAccess(ctx context.Context, gatewayID string) error {
	name, host, err := d.names(gatewayID)
	if err != nil {
		return err
	}
	app, found, err := d.appAt(ctx, host)
	if err != nil {
		return fmt.Errorf("cloudflare: destroy %q: %w", name, err)
	}
	if found && app.Name == name {
		err := d.deleted(d.call(ctx, idempotent, func(ctx context.Context) error {
			p := zero_trust.AccessApplicationDeleteParams{}
			p.AccountID.Value, p.AccountID.Present = d.cfg.AccountID, true
			_, err := d.apps.Delete(ctx, app.ID, p)
			return err
		}))
		if err != nil {
			return fmt.Errorf("cloudflare: destroy %q: delete access application %s: %w", name, app.ID, err)
		}
		d.log.LogAttrs(ctx, slog.LevelInfo, "cloudflare: deleted access application", slog.String("gateway", gatewayID), slog.String("app", app.ID))
	}
	policies, err := d.policiesNamed(ctx, name)
	if err != nil {
		return fmt.Errorf("cloudflare: destroy %q: %w", name, err)
	}
	for _, pol := range policies {
		err := d.deleted(d.call(ctx, idempotent, func(ctx context.Context) error {
			p := zero_trust.AccessPolicyDeleteParams{}
			p.AccountID.Value, p.AccountID.Present = d.cfg.AccountID, true
			_, err := d.policies.Delete(ctx, pol.ID, p)
			return err
		}))
		if err != nil {
			return fmt.Errorf("cloudflare: destroy %q: delete access policy %s: %w", name, pol.ID, err)
		}
		d.log.LogAttrs(ctx, slog.LevelInfo, "cloudflare: deleted access policy", slog.String("gateway", gatewayID), slog.String("policy", pol.ID))
	}
	return nil
}

// DestroyDNS removes the DNS record of the gateway's hostname if it carries the driver's
// comment or points at the gateway's tunnel; any other is left, and logged.
func (d *Driver) DestroyDNS(ctx context.Context, gatewayID string) error {
	name, host, err := d.names(gatewayID)
	if err != nil {
		return err
	}
	t, err := d.destroyLookup(ctx, name)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	recs, err := d.recordsAt(ctx, host)
	if err != nil {
		return fmt.Errorf("cloudflare: destroy %q: %w", name, err)
	}
	for _, r := range recs {
		ours := r.Comment == recordComment(gatewayID) || (t.ID != "" && r.Type == dns.RecordResponseTypeCNAME && r.Content == tunnelTarget(t.ID))
		if !ours {
			d.log.LogAttrs(ctx, slog.LevelWarn, "cloudflare: left a dns record that is not the driver's", slog.String("gateway", gatewayID),
				slog.String("hostname", host), slog.String("record", r.ID))
			continue
		}
		err := d.deleted(d.call(ctx, idempotent, func(ctx context.Context) error {
			p := dns.RecordDeleteParams{}
			p.ZoneID.Value, p.ZoneID.Present = d.cfg.ZoneID, true
			_, err := d.records.Delete(ctx, r.ID, p)
			return err
		}))
		if err != nil {
			return fmt.Errorf("cloudflare: destroy %q: delete dns record %s: %w", name, r.ID, err)
		}
		d.log.LogAttrs(ctx, slog.LevelInfo, "cloudflare: deleted dns record", slog.String("gateway", gatewayID), slog.String("record", r.ID))
	}
	return nil
}

// DestroyTunnel deletes the gateway's tunnel with its configuration, and returns nil only
// once no live tunnel of its name is listed. Its connector should be stopped first.
func (d *Driver) DestroyTunnel(ctx context.Context, gatewayID string) error {
	name, err := d.TunnelName(gatewayID)
	if err != nil {
		return err
	}
	t, err := d.destroyLookup(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if t.ID == "" {
		return nil
	}
	err = d.deleted(d.call(ctx, idempotent, func(ctx context.Context) error {
		p := zero_trust.TunnelCloudflaredDeleteParams{}
		p.AccountID.Value, p.AccountID.Present = d.cfg.AccountID, true
		_, err := d.tunnels.Delete(ctx, t.ID, p)
		return err
	}))
	if err != nil {
		return fmt.Errorf("cloudflare: destroy %q: delete tunnel %s: %w", name, t.ID, err)
	}
	if _, err := d.lookupTunnel(ctx, name); !errors.Is(err, ErrNotFound) {
		if err == nil {
			err = errors.New("still listed")
		}
		return fmt.Errorf("cloudflare: destroy %q: tunnel %s: %w", name, t.ID, err)
	}
	d.log.LogAttrs(ctx, slog.LevelInfo, "cloudflare: deleted tunnel", slog.String("gateway", gatewayID), slog.String("tunnel", t.ID))
	return nil
}

// destroyLookup finds the tunnel named name for a destroy: ErrNotFound when there is
// none; a locally managed tunnel of that name (ErrDrift) is not the driver's to touch.
func (d *Driver) destroyLookup(ctx context.Context, name string) (Tunnel, error) {
	t, err := d.lookupTunnel(ctx, name)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return t, fmt.Errorf("cloudflare: destroy %q: %w", name, err)
	}
	return t, err
}

// deleted counts a 404 as done.
func (d *Driver) deleted(err error) error {
	if statusOf(err) == http.StatusNotFound {
		return nil
	}
	return err
}
