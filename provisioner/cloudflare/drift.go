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
	out, err := d.CheckTunnel(ctx, gatewayID, "")
	if err != nil || len(out) > 0 && out[0].Resource == "tunnel" {
		return out, err
	}
	dns, err := d.CheckDNS(ctx, gatewayID)
	if err != nil {
		return nil, err
	}
	access, err := d.CheckAccess(ctx, gatewayID, "")
	if err != nil {
		return nil, err
	}
	return append(append(out, dns...), access...), nil
}

// CheckTunnel reports how the gateway's tunnel and its ingress differ from what
// EnsureTunnel and ConfigureIngress(service) make, changing nothing; service "" accepts any
// loopback HTTP service. A missing tunnel is the only finding then.
func (d *Driver) CheckTunnel(ctx context.Context, gatewayID, service string) ([]Finding, error) {
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
	rules, err := d.ingress(ctx, t.ID)
	if err != nil {
		return nil, err
	}
	want := service
	if want == "" {
		want = "http://127.0.0.1:PORT"
	}
	if len(rules) != 2 || rules[0].hostname != host || rules[0].path != "" || checkService(rules[0].service) != nil ||
		service != "" && rules[0].service != service || rules[1] != (rule{service: catchAll}) {
		return []Finding{{Resource: "ingress", Name: host, Want: host + " to " + want + ", then " + catchAll, Got: describe(rules)}}, nil
	}
	return nil, nil
}

// CheckDNS reports how the gateway's hostname differs from one proxied CNAME to its tunnel,
// changing nothing. A missing tunnel is ErrNotFound.
func (d *Driver) CheckDNS(ctx context.Context, gatewayID string) ([]Finding, error) {
	name, host, err := d.names(gatewayID)
	if err != nil {
		return nil, err
	}
	t, err := d.lookupTunnel(ctx, name)
	if err != nil {
		return nil, err
	}
	target := tunnelTarget(t.ID)
	recs, err := d.recordsAt(ctx, host)
	if err != nil {
		return nil, err
	}
	switch {
	case len(recs) == 0:
		return []Finding{{Resource: "dns", Name: host, Want: "CNAME " + target, Got: "none"}}, nil
	case len(recs) > 1:
		return []Finding{{Resource: "dns", Name: host, Want: "CNAME " + target, Got: fmt.Sprintf("%d records", len(recs))}}, nil
	case recs[0].Type != dns.RecordResponseTypeCNAME || recs[0].Content != target:
		return []Finding{{Resource: "dns", Name: host, Want: "CNAME " + target, Got: string(recs[0].Type) + " " + recs[0].Content}}, nil
	case !recs[0].Proxied:
		return []Finding{{Resource: "dns", Name: host, Want: "proxied", Got: "not proxied"}}, nil
	}
	return nil, nil
}

// CheckAccess reports how the gateway's Access application differs from what EnsureAccess
// (serviceTokenID) makes, changing nothing; serviceTokenID "" accepts any one policy.
func (d *Driver) CheckAccess(ctx context.Context, gatewayID, serviceTokenID string) ([]Finding, error) {
	name, host, err := d.names(gatewayID)
	if err != nil {
		return nil, err
	}
	app, found, err := d.appAt(ctx, host)
	if err != nil {
		return nil, err
	}
	pol := appPolicies(app.JSON.Policies.Raw())
	switch {
	case !found:
		return []Finding{{Resource: "access", Name: host, Want: "application " + name, Got: "none"}}, nil
	case app.Name != name:
		return []Finding{{Resource: "access", Name: host, Want: "application " + name, Got: "application " + app.Name}}, nil
	case len(pol) != 1:
		return []Finding{{Resource: "access", Name: host, Want: "one policy", Got: fmt.Sprintf("%d policies", len(pol))}}, nil
	case serviceTokenID == "":
		return nil, nil
	}
	policies, err := d.policiesNamed(ctx, name)
	if err != nil {
		return nil, err
	}
	if len(policies) != 1 || policies[0].ID != pol[0] || !policyIs(policies[0], serviceTokenID) {
		return []Finding{{Resource: "access", Name: host, Want: "policy " + name + " admitting only service token " + serviceTokenID,
			Got: "another policy"}}, nil
	}
	return nil, nil
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
