package cloudflare

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cloudflare/cloudflare-go/v7/packages/pagination"
	"github.com/cloudflare/cloudflare-go/v7/zero_trust"

	"github.com/moltgate/moltgate/keystore"
)

// ServiceToken is an Access service token: moltgate's credential at the gateways' Access
// applications (headers CF-Access-Client-Id and CF-Access-Client-Secret).
type ServiceToken struct {
	ID        string
	Name      string
	ClientID  string
	ExpiresAt time.Time
	// ClientSecret is set only by the call that created the token: Cloudflare shows it
	// once. Keep it in the keystore; a later EnsureServiceToken returns the token without
	// it.
	ClientSecret keystore.Secret
}

// EnsureServiceToken makes sure a service token named name exists. When it creates one,
// the result carries the client secret, which the caller must keep. A token found after a
// create whose answer was lost has a secret nobody holds: it is deleted and created again.
// Names are not unique on Cloudflare; of several tokens of one name the oldest is used.
func (d *Driver) EnsureServiceToken(ctx context.Context, name string) (ServiceToken, error) {
	if name == "" {
		return ServiceToken{}, errors.New("cloudflare: service token: empty name")
	}
	found, err := d.serviceTokens(ctx, name)
	if err != nil {
		return ServiceToken{}, err
	}
	if len(found) > 0 {
		if len(found) > 1 {
			d.log.LogAttrs(ctx, slog.LevelWarn, "cloudflare: several service tokens of one name", slog.String("service_token", name), slog.Int("count", len(found)))
		}
		return found[0], nil
	}
	for try := 1; ; try++ {
		tok, err := d.createServiceToken(ctx, name)
		if err == nil || !errors.Is(err, ErrUnknownResult) {
			return tok, err
		}
		// The answer, and with it the only copy of the secret, may be lost.
		orphans, lerr := d.serviceTokens(ctx, name)
		if lerr != nil {
			return ServiceToken{}, lerr
		}
		if len(orphans) == 0 || try == 2 {
			return ServiceToken{}, err
		}
		for _, o := range orphans {
			if err := d.deleteServiceToken(ctx, o.ID); err != nil {
				return ServiceToken{}, err
			}
			d.log.LogAttrs(ctx, slog.LevelWarn, "cloudflare: deleted service token whose secret was lost", slog.String("service_token", name), slog.String("id", o.ID))
		}
	}
}

func (d *Driver) createServiceToken(ctx context.Context, name string) (ServiceToken, error) {
	var res *zero_trust.AccessServiceTokenNewResponse
	err := d.call(ctx, create, func(ctx context.Context) (err error) {
		p := zero_trust.AccessServiceTokenNewParams{}
		p.AccountID.Value, p.AccountID.Present = d.cfg.AccountID, true
		p.Name.Value, p.Name.Present = name, true
		p.Duration.Value, p.Duration.Present = d.cfg.ServiceTokenDuration, true
		res, err = d.tokens.New(ctx, p)
		return err
	})
	if err != nil {
		return ServiceToken{}, fmt.Errorf("cloudflare: create service token %q: %w", name, err)
	}
	if res.ClientSecret == "" {
		return ServiceToken{}, fmt.Errorf("cloudflare: create service token %q: %w: the answer has no client secret", name, ErrUnknownResult)
	}
	d.log.LogAttrs(ctx, slog.LevelInfo, "cloudflare: created service token", slog.String("service_token", name), slog.String("id", res.ID))
	return ServiceToken{ID: res.ID, Name: res.Name, ClientID: res.ClientID, ClientSecret: keystore.Secret(res.ClientSecret)}, nil
}

// serviceTokens lists the tokens named name, oldest first.
func (d *Driver) serviceTokens(ctx context.Context, name string) ([]ServiceToken, error) {
	all, err := listAll(ctx, d, func(ctx context.Context, n, size int64) (*pagination.V4PagePaginationArray[zero_trust.ServiceToken], error) {
		p := zero_trust.AccessServiceTokenListParams{}
		p.AccountID.Value, p.AccountID.Present = d.cfg.AccountID, true
		p.Name.Value, p.Name.Present = name, true
		p.Page.Value, p.Page.Present = n, true
		p.PerPage.Value, p.PerPage.Present = size, true
		return d.tokens.List(ctx, p)
	})
	if err != nil {
		return nil, fmt.Errorf("cloudflare: list service tokens %q: %w", name, err)
	}
	var out []ServiceToken
	for _, t := range all {
		if t.Name == name {
			out = append(out, ServiceToken{ID: t.ID, Name: t.Name, ClientID: t.ClientID, ExpiresAt: t.ExpiresAt})
		}
	}
	return out, nil
}

// ServiceTokens lists the service tokens named name, oldest first, without their secrets.
func (d *Driver) ServiceTokens(ctx context.Context, name string) ([]ServiceToken, error) {
	return d.serviceTokens(ctx, name)
}

// DeleteServiceTokenID deletes service token id; one already gone counts as deleted.
func (d *Driver) DeleteServiceTokenID(ctx context.Context, id string) error {
	return d.deleteServiceToken(ctx, id)
}

// DeleteServiceToken deletes every service token named name; none is done. Destroy does
// not: one token may admit moltgate to many gateways.
func (d *Driver) DeleteServiceToken(ctx context.Context, name string) error {
	found, err := d.serviceTokens(ctx, name)
	if err != nil {
		return err
	}
	for _, t := range found {
		if err := d.deleteServiceToken(ctx, t.ID); err != nil {
			return err
		}
		d.log.LogAttrs(ctx, slog.LevelInfo, "cloudflare: deleted service token", slog.String("service_token", name), slog.String("id", t.ID))
	}
	return nil
}

func (d *Driver) deleteServiceToken(ctx context.Context, id string) error {
	err := d.call(ctx, idempotent, func(ctx context.Context) error {
		p := zero_trust.AccessServiceTokenDeleteParams{}
		p.AccountID.Value, p.AccountID.Present = d.cfg.AccountID, true
		_, err := d.tokens.Delete(ctx, id, p)
		return err
	})
	if err != nil && statusOf(err) != 404 {
		return fmt.Errorf("cloudflare: delete service token %s: %w", id, err)
	}
	return nil
}

// Access is a gateway's Access application and the policy it links.
type Access struct {
	AppID    string
	AUD      string // the application's audience tag, for checking Access JWTs at the gateway
	PolicyID string
	Domain   string
}

// EnsureAccess makes sure the gateway's hostname is an Access application (self_hosted,
// named TunnelName) whose only policy is the reusable policy of the same name, which
// admits exactly serviceTokenID (decision non_identity: no person, only that token). A
// policy or application that says otherwise is overwritten; an application on the hostname
// under another name is not the driver's: *DriftError.
func (d *Driver) EnsureAccess(ctx context.Context, gatewayID, serviceTokenID string) (Access, error) {
	name, host, err := d.names(gatewayID)
	if err != nil {
		return Access{}, err
	}
	if serviceTokenID == "" {
		return Access{}, errors.New("cloudflare: ensure access: empty service token id")
	}
	policyID, err := d.ensurePolicy(ctx, gatewayID, name, serviceTokenID)
	if err != nil {
		return Access{}, err
	}
	return d.ensureApp(ctx, gatewayID, name, host, policyID)
}

// policyRule is an include rule as the driver reads it back.
type policyRule struct {
	ServiceToken *struct {
		TokenID string `json:"token_id"`
	} `json:"service_token"`
}

// policyIs reports whether a policy admits exactly token, as the driver makes it.
func policyIs(p zero_trust.AccessPolicyListResponse, token string) bool {
	var include []policyRule
	if p.Decision != zero_trust.DecisionNonIdentity || json.Unmarshal([]byte(p.JSON.Include.Raw()), &include) != nil ||
		len(include) != 1 || include[0].ServiceToken == nil || include[0].ServiceToken.TokenID != token {
		return false
	}
	return len(p.Exclude) == 0 && len(p.Require) == 0
}

func (d *Driver) ensurePolicy(ctx context.Context, gatewayID, name, token string) (string, error) {
	found, err := d.policiesNamed(ctx, name)
	if err != nil {
		return "", err
	}
	if len(found) == 0 {
		var res *zero_trust.AccessPolicyNewResponse
		err := d.call(ctx, create, func(ctx context.Context) (err error) {
			p := zero_trust.AccessPolicyNewParams{}
			p.AccountID.Value, p.AccountID.Present = d.cfg.AccountID, true
			p.Name.Value, p.Name.Present = name, true
			p.Decision.Value, p.Decision.Present = zero_trust.DecisionNonIdentity, true
			p.Include.Value, p.Include.Present = tokenRule(token), true
			res, err = d.policies.New(ctx, p)
			return err
		})
		if err == nil {
			d.log.LogAttrs(ctx, slog.LevelInfo, "cloudflare: created access policy", slog.String("gateway", gatewayID), slog.String("policy", res.ID))
			return res.ID, nil
		}
		if !errors.Is(err, ErrUnknownResult) {
			return "", fmt.Errorf("cloudflare: create access policy %q: %w", name, err)
		}
		if found, err = d.policiesNamed(ctx, name); err != nil {
			return "", err
		}
		if len(found) == 0 {
			return "", fmt.Errorf("cloudflare: create access policy %q: %w", name, ErrUnknownResult)
		}
	}
	p := found[0]
	if policyIs(p, token) {
		return p.ID, nil
	}
	err = d.call(ctx, idempotent, func(ctx context.Context) error {
		u := zero_trust.AccessPolicyUpdateParams{}
		u.AccountID.Value, u.AccountID.Present = d.cfg.AccountID, true
		u.Name.Value, u.Name.Present = name, true
		u.Decision.Value, u.Decision.Present = zero_trust.DecisionNonIdentity, true
		u.Include.Value, u.Include.Present = tokenRule(token), true
		u.Exclude.Value, u.Exclude.Present = []zero_trust.AccessRuleUnionParam{}, true
		u.Require.Value, u.Require.Present = []zero_trust.AccessRuleUnionParam{}, true
		_, err := d.policies.Update(ctx, p.ID, u)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("cloudflare: update access policy %s: %w", p.ID, err)
	}
	d.log.LogAttrs(ctx, slog.LevelWarn, "cloudflare: repaired access policy", slog.String("gateway", gatewayID), slog.String("policy", p.ID))
	return p.ID, nil
}

func tokenRule(token string) []zero_trust.AccessRuleUnionParam {
	var st zero_trust.ServiceTokenRuleServiceTokenParam
	st.TokenID.Value, st.TokenID.Present = token, true
	var r zero_trust.ServiceTokenRuleParam
	r.ServiceToken.Value, r.ServiceToken.Present = st, true
	return []zero_trust.AccessRuleUnionParam{r}
}

// policiesNamed lists the account's reusable policies named name, oldest first (the list
// has no name filter).
func (d *Driver) policiesNamed(ctx context.Context, name string) ([]zero_trust.AccessPolicyListResponse, error) {
	all, err := listAll(ctx, d, func(ctx context.Context, n, size int64) (*pagination.V4PagePaginationArray[zero_trust.AccessPolicyListResponse], error) {
		p := zero_trust.AccessPolicyListParams{}
		p.AccountID.Value, p.AccountID.Present = d.cfg.AccountID, true
		p.Page.Value, p.Page.Present = n, true
		p.PerPage.Value, p.PerPage.Present = size, true
		return d.policies.List(ctx, p)
	})
	if err != nil {
		return nil, fmt.Errorf("cloudflare: list access policies: %w", err)
	}
	var out []zero_trust.AccessPolicyListResponse
	for _, p := range all {
		if p.Name == name {
			out = append(out, p)
		}
	}
	return out, nil
}

// appPolicies reads the ids of an application's policies, in the order listed.
func appPolicies(raw string) []string {
	var links []struct {
		ID string `json:"id"`
	}
	if json.Unmarshal([]byte(raw), &links) != nil {
		return nil
	}
	ids := make([]string, len(links))
	for i, l := range links {
		ids[i] = l.ID
	}
	return ids
}

func (d *Driver) ensureApp(ctx context.Context, gatewayID, name, host, policyID string) (Access, error) {
	app, found, err := d.appAt(ctx, host)
	if err != nil {
		return Access{}, err
	}
	if !found {
		var res *zero_trust.AccessApplicationNewResponse
		err := d.call(ctx, create, func(ctx context.Context) (err error) {
			p := zero_trust.AccessApplicationNewParams{}
			p.AccountID.Value, p.AccountID.Present = d.cfg.AccountID, true
			p.Body = appNewBody(name, host, policyID)
			res, err = d.apps.New(ctx, p)
			return err
		})
		if err == nil {
			d.log.LogAttrs(ctx, slog.LevelInfo, "cloudflare: created access application", slog.String("gateway", gatewayID), slog.String("app", res.ID))
			return Access{AppID: res.ID, AUD: res.AUD, PolicyID: policyID, Domain: host}, nil
		}
		if !errors.Is(err, ErrUnknownResult) && statusOf(err) != 409 {
			return Access{}, fmt.Errorf("cloudflare: create access application %q: %w", host, err)
		}
		if app, found, err = d.appAt(ctx, host); err != nil {
			return Access{}, err
		}
		if !found {
			return Access{}, fmt.Errorf("cloudflare: create access application %q: %w", host, ErrUnknownResult)
		}
	}
	if app.Name != name {
		return Access{}, &DriftError{Findings: []Finding{{Resource: "access", Name: host, Want: "application " + name, Got: "application " + app.Name}}}
	}
	out := Access{AppID: app.ID, AUD: app.AUD, PolicyID: policyID, Domain: host}
	if pol := appPolicies(app.JSON.Policies.Raw()); len(pol) == 1 && pol[0] == policyID && app.Type == zero_trust.ApplicationTypeSelfHosted {
		return out, nil
	}
	err = d.call(ctx, idempotent, func(ctx context.Context) error {
		p := zero_trust.AccessApplicationUpdateParams{}
		p.AccountID.Value, p.AccountID.Present = d.cfg.AccountID, true
		var b zero_trust.AccessApplicationUpdateParamsBodySelfHostedApplication
		b.Name.Value, b.Name.Present = name, true
		b.Domain.Value, b.Domain.Present = host, true
		b.Type.Value, b.Type.Present = zero_trust.ApplicationTypeSelfHosted, true
		var link zero_trust.AccessApplicationUpdateParamsBodySelfHostedApplicationPoliciesAccessAppPolicyLink
		link.ID.Value, link.ID.Present = policyID, true
		link.Precedence.Value, link.Precedence.Present = 1, true
		b.Policies.Value, b.Policies.Present = []zero_trust.AccessApplicationUpdateParamsBodySelfHostedApplicationPolicyUnion{link}, true
		p.Body = b
		_, err := d.apps.Update(ctx, app.ID, p)
		return err
	})
	if err != nil {
		return Access{}, fmt.Errorf("cloudflare: update access application %s: %w", app.ID, err)
	}
	d.log.LogAttrs(ctx, slog.LevelWarn, "cloudflare: repaired access application", slog.String("gateway", gatewayID), slog.String("app", app.ID))
	return out, nil
}

func appNewBody(name, host, policyID string) zero_trust.AccessApplicationNewParamsBodySelfHostedApplication {
	var b zero_trust.AccessApplicationNewParamsBodySelfHostedApplication
	b.Name.Value, b.Name.Present = name, true
	b.Domain.Value, b.Domain.Present = host, true
	b.Type.Value, b.Type.Present = zero_trust.ApplicationTypeSelfHosted, true
	var link zero_trust.AccessApplicationNewParamsBodySelfHostedApplicationPoliciesAccessAppPolicyLink
	link.ID.Value, link.ID.Present = policyID, true
	link.Precedence.Value, link.Precedence.Present = 1, true
	b.Policies.Value, b.Policies.Present = []zero_trust.AccessApplicationNewParamsBodySelfHostedApplicationPolicyUnion{link}, true
	return b
}

// appAt finds the Access application whose domain is host.
func (d *Driver) appAt(ctx context.Context, host string) (zero_trust.AccessApplicationListResponse, bool, error) {
	all, err := listAll(ctx, d, func(ctx context.Context, n, size int64) (*pagination.V4PagePaginationArray[zero_trust.AccessApplicationListResponse], error) {
		p := zero_trust.AccessApplicationListParams{}
		p.AccountID.Value, p.AccountID.Present = d.cfg.AccountID, true
		p.Domain.Value, p.Domain.Present = host, true
		p.Exact.Value, p.Exact.Present = true, true
		p.Page.Value, p.Page.Present = n, true
		p.PerPage.Value, p.PerPage.Present = size, true
		return d.apps.List(ctx, p)
	})
	if err != nil {
		return zero_trust.AccessApplicationListResponse{}, false, fmt.Errorf("cloudflare: list access applications %q: %w", host, err)
	}
	for _, a := range all {
		if a.Domain == host {
			return a, true, nil
		}
	}
	return zero_trust.AccessApplicationListResponse{}, false, nil
}
