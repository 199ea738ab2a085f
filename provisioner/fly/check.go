package fly

import (
	"context"
	"fmt"
	"net/http"
)

// Read-only lookups, for the provisioner's checks: unlike the ensures, they never create,
// adopt or remove anything.

// App returns the gateway's app: ErrNotFound when nobody has it, ErrNameTaken when
// another organization does.
func (d *Driver) App(ctx context.Context, gatewayID string) (App, error) {
	name, err := d.AppName(gatewayID)
	if err != nil {
		return App{}, err
	}
	return d.lookupApp(ctx, name)
}

// Volumes lists the gateway's data volumes, oldest first as the API lists them: one when
// all is well (EnsureVolume removes the duplicates a repeated create leaves).
func (d *Driver) Volumes(ctx context.Context, gatewayID string) ([]Volume, error) {
	app, err := d.AppName(gatewayID)
	if err != nil {
		return nil, err
	}
	vols, err := d.volumes(ctx, app)
	if err != nil {
		return nil, err
	}
	out := make([]Volume, len(vols))
	for i, v := range vols {
		out[i] = Volume{ID: v.ID, Name: v.Name, Region: v.Region, SizeGB: v.SizeGb, Encrypted: v.Encrypted}
	}
	return out, nil
}

// IPCounts counts the gateway app's addresses by kind ("v6", "shared_v4"): one of each
// when all is well.
func (d *Driver) IPCounts(ctx context.Context, gatewayID string) (map[string]int, error) {
	app, err := d.AppName(gatewayID)
	if err != nil {
		return nil, err
	}
	var n map[string]int
	err = d.call(ctx, callOpts{}, func(ctx context.Context) error {
		res, err := d.client.GetIPAssignments(ctx, app)
		if err != nil {
			return err
		}
		n = map[string]int{}
		for _, ip := range res.IPs {
			if k := ipKind(ip); k != "" {
				n[k]++
			}
		}
		return nil
	})
	if err != nil {
		if statusOf(err) == http.StatusNotFound {
			return nil, fmt.Errorf("fly: app %q: %w", app, ErrNotFound)
		}
		return nil, fmt.Errorf("fly: list ips of %q: %w", app, err)
	}
	return n, nil
}

// GatewayPort is the gateway's loopback port in its machine: where a tunnel inside the VM
// sends its traffic.
func (d *Driver) GatewayPort() int { return d.cfg.GatewayPort }
