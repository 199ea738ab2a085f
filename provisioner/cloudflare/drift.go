package cloudflare

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/cloudflare/cloudflare-go/v7/dns"
)

// Finding is one difference between what the driver would make and what exists.
type Finding struct {
	// Resource is "tunnel", "dns", "ingress" or "access".
	Resource string
	// Name is the tunnel name or the hostname concerned.
	Name string
	Want string
	Got  string
}

func (f Finding) String() string {
	return fmt.Sprintf("%s %s: want %s, got %s", f.Resource, f.Name, f.Want, f.Got)
}

// DriftError reports what exists and is not the driver's to change. errors.Is(err,
// ErrDrift) holds.
type DriftError struct {
	Findings []Finding
}

func (e *DriftError) Error() string {
	s := make([]string, len(e.Findings))
	for i, f := range e.Findings {
		s[i] = f.String()
	}
	return "cloudflare: drift: " + strings.Join(s, "; ")
}

// Is makes errors.Is(err, ErrDrift) hold.
func (e *DriftError) Is(target error) bool { return target == ErrDrift }

// Drift compares the gateway's resources with what the ensures make, without changing
// anything: the tunnel exists and is managed remotely; the hostname is one proxied CNAME to
// it; the ingress routes the hostname to a loopback HTTP service, then 404; the hostname
// is the driver's Access application with one policy. No findings: no drift. A missing
// tunnel is the only finding, as the rest hangs on it.
func (d *Driver) Drift(ctx context.Context, gatewayID string) ([]Finding, error) {
	name, host, err := d.names(gatewayID)
	if err != nil {
		return nil, err
	}
	t, err := d.lookupTunnel(ctx, name)
	var de *DriftError
	switch {
	case errors.Is(err, ErrNotFound):
		return []Finding{{Resource: "tunnel", Name: name, Want: "a tunnel", Got: "none"}}, nil
	case errors.As(err, &de):
		return de.Findings, nil
	case err != nil:
		return nil, err
	}
	var out []Finding
	target := tunnelTarget(t.ID)
	recs, err := d.recordsAt(ctx, host)
	if err != nil {
		return nil, err
	}
	switch {
	case len(recs) == 0:
		out = append(out, Finding{Resource: "dns", Name: host, Want: "CNAME " + target, Got: "none"})
	case len(recs) > 1:
		out = append(out, Finding{Resource: "dns", Name: host, Want: "CNAME " + target, Got: fmt.Sprintf("%d records", len(recs))})
	case recs[0].Type != dns.RecordResponseTypeCNAME || recs[0].Content != target:
		out = append(out, Finding{Resource: "dns", Name: host, Want: "CNAME " + target, Got: string(recs[0].Type) + " " + recs[0].Content})
	case !recs[0].Proxied:
		out = append(out, Finding{Resource: "dns", Name: host, Want: "proxied", Got: "not proxied"})
	}
	rules, err := d.ingress(ctx, t.ID)
	if err != nil {
		return nil, err
	}
	if len(rules) != 2 || rules[0].hostname != host || rules[0].path != "" || checkService(rules[0].service) != nil || rules[1] != (rule{service: catchAll}) {
		out = append(out, Finding{Resource: "ingress", Name: host, Want: host + " to http://127.0.0.1:PORT, then " + catchAll, Got: describe(rules)})
	}
	app, found, err := d.appAt(ctx, host)
	if err != nil {
		return nil, err
	}
	switch pol := appPolicies(app.JSON.Policies.Raw()); {
	case !found:
		out = append(out, Finding{Resource: "access", Name: host, Want: "application " + name, Got: "none"})
	case app.Name != name:
		out = append(out, Finding{Resource: "access", Name: host, Want: "application " + name, Got: "application " + app.Name})
	case len(pol) != 1:
		out = append(out, Finding{Resource: "access", Name: host, Want: "one policy", Got: fmt.Sprintf("%d policies", len(pol))})
	}
	return out, nil
}

func describe(rules []rule) string {
	if len(rules) == 0 {
		return "no ingress"
	}
	s := make([]string, len(rules))
	for i, r := range rules {
		s[i] = r.service
		if r.hostname != "" {
			s[i] = r.hostname + r.path + " to " + r.service
		}
	}
	return strings.Join(s, ", ")
}
