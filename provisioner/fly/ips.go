package fly

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/superfly/fly-go/flaps"
)

// IPs are a gateway app's public addresses: a dedicated IPv6 and a shared IPv4.
type IPs struct {
	V6       string
	SharedV4 string
}

// ipKind classifies an assignment as one of the two the driver keeps, or neither.
func ipKind(ip flaps.IPAssignment) string {
	switch {
	case ip.Shared && !strings.Contains(ip.IP, ":"):
		return "shared_v4"
	case !ip.Shared && strings.Contains(ip.IP, ":") && !ip.IsFlycast():
		return "v6"
	}
	return ""
}

// EnsureIPs makes sure the gateway's app has exactly one dedicated IPv6 and one shared
// IPv4. An assignment whose answer is lost is resolved by listing again; duplicates a
// blind retry made are released, the oldest kept.
func (d *Driver) EnsureIPs(ctx context.Context, gatewayID string) (IPs, error) {
	app, err := d.AppName(gatewayID)
	if err != nil {
		return IPs{}, err
	}
	have, err := d.ips(ctx, gatewayID, app)
	if err != nil {
		return IPs{}, err
	}
	for _, kind := range []string{"v6", "shared_v4"} {
		if have[kind] != "" {
			continue
		}
		req := flaps.AssignIPRequest{Type: kind, Organization: d.cfg.Org}
		// A shared IPv4 takes no region; a dedicated IPv6 is global unless a region is given.
		err := d.call(ctx, callOpts{kind: create}, func(ctx context.Context) error {
			_, err := d.client.AssignIP(ctx, app, req)
			return err
		})
		if err != nil {
			if have, lerr := d.ips(ctx, gatewayID, app); lerr == nil && have[kind] != "" {
				continue // the lost answer was a success
			}
			return IPs{}, fmt.Errorf("fly: assign %s to %q: %w", kind, app, err)
		}
		d.log.LogAttrs(ctx, slog.LevelInfo, "fly: assigned ip", slog.String("gateway", gatewayID), slog.String("type", kind))
	}
	if have, err = d.ips(ctx, gatewayID, app); err != nil {
		return IPs{}, err
	}
	return IPs{V6: have["v6"], SharedV4: have["shared_v4"]}, nil
}

// ips lists the app's assignments by kind, releasing all but the oldest of a kind.
func (d *Driver) ips(ctx context.Context, gatewayID, app string) (map[string]string, error) {
	var res *flaps.ListIPAssignmentsResponse
	err := d.call(ctx, callOpts{}, func(ctx context.Context) (err error) {
		res, err = d.client.GetIPAssignments(ctx, app)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("fly: list ips of %q: %w", app, err)
	}
	ips := slices.Clone(res.IPs)
	slices.SortStableFunc(ips, func(a, b flaps.IPAssignment) int { return a.CreatedAt.Compare(b.CreatedAt) })
	have := map[string]string{}
	for _, ip := range ips {
		kind := ipKind(ip)
		switch {
		case kind == "":
		case have[kind] == "":
			have[kind] = ip.IP
		default:
			if err := d.deleteIP(ctx, app, ip.IP); err != nil {
				return nil, err
			}
			d.log.LogAttrs(ctx, slog.LevelWarn, "fly: released duplicate ip", slog.String("gateway", gatewayID), slog.String("type", kind))
		}
	}
	return have, nil
}

func (d *Driver) deleteIP(ctx context.Context, app, ip string) error {
	err := d.call(ctx, callOpts{}, func(ctx context.Context) error {
		return d.client.DeleteIPAssignment(ctx, app, ip)
	})
	if err != nil && statusOf(err) != http.StatusNotFound {
		return fmt.Errorf("fly: release ip %s of %q: %w", ip, app, err)
	}
	return nil
}
