package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/proxy/browser"
	"github.com/moltgate/moltgate/registry"
)

// Client calls the admin API; the CLI is built on it.
type Client struct {
	// BaseURL is the admin listener, e.g. http://127.0.0.1:9090.
	BaseURL string
	// Token is the admin token or a Clerk session token, sent as Bearer.
	Token string
	// HTTP is the client to use. Default http.DefaultClient.
	HTTP *http.Client
}

// APIError is a refusal from the admin API.
type APIError struct {
	Status  int
	Message string `json:"error"`
	Reason  string `json:"reason"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("admin API: %d %s (%s)", e.Status, e.Message, e.Reason)
}

// List returns the gateways the caller may read.
func (c *Client) List(ctx context.Context) ([]Gateway, error) {
	var out []Gateway
	return out, c.do(ctx, http.MethodGet, "/v1/gateways", nil, &out)
}

// Create adds a gateway; the response holds the token if one was generated.
func (c *Client) Create(ctx context.Context, req CreateRequest) (CreateResponse, error) {
	var out CreateResponse
	return out, c.do(ctx, http.MethodPost, "/v1/gateways", req, &out)
}

// Get returns one gateway.
func (c *Client) Get(ctx context.Context, id string) (Gateway, error) {
	var out Gateway
	return out, c.do(ctx, http.MethodGet, "/v1/gateways/"+url.PathEscape(id), nil, &out)
}

// Delete removes a gateway.
func (c *Client) Delete(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/gateways/"+url.PathEscape(id), nil, nil)
}

// SetMember gives user role on gateway id.
func (c *Client) SetMember(ctx context.Context, id, user, role string) (Gateway, error) {
	var out Gateway
	return out, c.do(ctx, http.MethodPut, "/v1/gateways/"+url.PathEscape(id)+"/members/"+url.PathEscape(user),
		MemberRequest{Role: role}, &out)
}

// RemoveMember takes user off gateway id.
func (c *Client) RemoveMember(ctx context.Context, id, user string) (Gateway, error) {
	var out Gateway
	return out, c.do(ctx, http.MethodDelete, "/v1/gateways/"+url.PathEscape(id)+"/members/"+url.PathEscape(user), nil, &out)
}

// Launch returns a one-time link that signs a browser in to gateway id (see Server.launch),
// leading to returnPath on its host ("" for /).
func (c *Client) Launch(ctx context.Context, id, returnPath string) (Launch, error) {
	var out Launch
	return out, c.do(ctx, http.MethodPost, "/v1/gateways/"+url.PathEscape(id)+"/launch", LaunchRequest{ReturnPath: returnPath}, &out)
}

// Sessions lists the browser sessions the caller may see, of gateway and user when not empty.
func (c *Client) Sessions(ctx context.Context, gateway, user string) ([]browser.Session, error) {
	q := url.Values{}
	if gateway != "" {
		q.Set("gateway", gateway)
	}
	if user != "" {
		q.Set("user", user)
	}
	var out []browser.Session
	return out, c.do(ctx, http.MethodGet, "/v1/sessions?"+q.Encode(), nil, &out)
}

// RevokeSession ends browser session id and closes its sockets.
func (c *Client) RevokeSession(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/sessions/"+url.PathEscape(id), nil, nil)
}

// SetAllowlist replaces gateway id's IP allowlist; none admits any address.
func (c *Client) SetAllowlist(ctx context.Context, id string, cidrs []string) (Gateway, error) {
	var out Gateway
	if cidrs == nil {
		cidrs = []string{}
	}
	return out, c.do(ctx, http.MethodPut, "/v1/gateways/"+url.PathEscape(id)+"/allowlist", AllowlistRequest{CIDRs: cidrs}, &out)
}

// SetSkills replaces gateway id's skill rules.
func (c *Client) SetSkills(ctx context.Context, id string, rules registry.SkillRules) (Gateway, error) {
	var out Gateway
	return out, c.do(ctx, http.MethodPut, "/v1/gateways/"+url.PathEscape(id)+"/skills", rules, &out)
}

// AddKey stores a provider API key or channel credential for tenant, sealed; the answer shows
// it only as provider, last four and fingerprint.
func (c *Client) AddKey(ctx context.Context, tenant string, req AddKeyRequest) (keystore.APIKey, error) {
	var out keystore.APIKey
	return out, c.do(ctx, http.MethodPost, "/v1/tenants/"+url.PathEscape(tenant)+"/keys", req, &out)
}

// ListKeys returns tenant's keys (metadata only).
func (c *Client) ListKeys(ctx context.Context, tenant string) ([]keystore.APIKey, error) {
	var out []keystore.APIKey
	return out, c.do(ctx, http.MethodGet, "/v1/tenants/"+url.PathEscape(tenant)+"/keys", nil, &out)
}

// GetKey returns one key's metadata.
func (c *Client) GetKey(ctx context.Context, tenant, id string) (keystore.APIKey, error) {
	var out keystore.APIKey
	return out, c.do(ctx, http.MethodGet, keyPath(tenant, id, ""), nil, &out)
}

// VerifyKey checks a key with its provider.
func (c *Client) VerifyKey(ctx context.Context, tenant, id string) (keystore.APIKey, error) {
	var out keystore.APIKey
	return out, c.do(ctx, http.MethodPost, keyPath(tenant, id, "/verify"), nil, &out)
}

// ActivateKey makes a verified key the active one of its provider.
func (c *Client) ActivateKey(ctx context.Context, tenant, id string) (keystore.APIKey, error) {
	var out keystore.APIKey
	return out, c.do(ctx, http.MethodPost, keyPath(tenant, id, "/activate"), nil, &out)
}

// RevokeKey ends a key; force is needed for the active one.
func (c *Client) RevokeKey(ctx context.Context, tenant, id string, force bool) (keystore.APIKey, error) {
	var out keystore.APIKey
	return out, c.do(ctx, http.MethodPost, keyPath(tenant, id, "/revoke"), RevokeKeyRequest{Force: force}, &out)
}

// RotateTenantKeys starts a rotation of tenant's keys (a new tenant salt; every record of the
// tenant re-encrypted in the background).
func (c *Client) RotateTenantKeys(ctx context.Context, tenant string) (Rotation, error) {
	var out Rotation
	return out, c.do(ctx, http.MethodPost, "/v1/tenants/"+url.PathEscape(tenant)+"/rotate-keys", nil, &out)
}

// RotateMaster starts a master key rotation (or resumes the unfinished one).
func (c *Client) RotateMaster(ctx context.Context) (Rotation, error) {
	var out Rotation
	return out, c.do(ctx, http.MethodPost, "/v1/keystore/rotate-master", nil, &out)
}

// KeyRotation returns every rotation job, the one started last as Job, and the records per
// key version.
func (c *Client) KeyRotation(ctx context.Context) (Rotation, error) {
	var out Rotation
	return out, c.do(ctx, http.MethodGet, "/v1/keystore/rotation", nil, &out)
}

// TenantKeyRotation returns tenant's current or last rotation job (no record counts).
func (c *Client) TenantKeyRotation(ctx context.Context, tenant string) (Rotation, error) {
	var out Rotation
	return out, c.do(ctx, http.MethodGet, "/v1/tenants/"+url.PathEscape(tenant)+"/rotation", nil, &out)
}

// WaitRotation polls tenant's rotation job (tenant "": the master key's) every poll until it
// is done, and returns it with the record counts (without them for a caller who may not read
// them, such as a tenant's admin); when ctx ends first it returns the last status with ctx's
// error. The polls leave out the counts, which cost the server a read of every record.
func (c *Client) WaitRotation(ctx context.Context, tenant string, poll time.Duration) (Rotation, error) {
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		rot, err := c.rotationJob(ctx, tenant)
		if err != nil {
			return rot, err
		}
		if rot.Job != nil && rot.Job.Phase == "done" {
			all, err := c.KeyRotation(ctx)
			var refused *APIError
			if tenant != "" && errors.As(err, &refused) && refused.Status == http.StatusForbidden {
				return rot, nil
			}
			all.Job, all.Jobs = rot.Job, nil
			return all, err
		}
		select {
		case <-ctx.Done():
			return rot, ctx.Err()
		case <-tick.C:
		}
	}
}

// rotationJob returns tenant's rotation job (tenant "": the master key's), without counts.
func (c *Client) rotationJob(ctx context.Context, tenant string) (Rotation, error) {
	if tenant != "" {
		return c.TenantKeyRotation(ctx, tenant)
	}
	var all Rotation
	if err := c.do(ctx, http.MethodGet, "/v1/keystore/rotation?usage=0", nil, &all); err != nil {
		return Rotation{}, err
	}
	var out Rotation
	for i := range all.Jobs {
		if all.Jobs[i].Kind == "master" {
			out.Job = &all.Jobs[i]
		}
	}
	return out, nil
}

func keyPath(tenant, id, action string) string {
	return "/v1/tenants/" + url.PathEscape(tenant) + "/keys/" + url.PathEscape(id) + action
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("admin: encode: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.BaseURL, "/")+path, body)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	if method != http.MethodGet && method != http.MethodHead {
		// The API refuses a change whose body is not declared JSON, even an empty one.
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("admin: read response: %w", err)
	}
	if resp.StatusCode >= 300 {
		apiErr := &APIError{Status: resp.StatusCode}
		if json.Unmarshal(data, apiErr) != nil {
			apiErr.Message = http.StatusText(resp.StatusCode)
		}
		return apiErr
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("admin: decode response: %w", err)
	}
	return nil
}
