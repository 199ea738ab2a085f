package admin

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/moltgate/moltgate/registry"
)

// API tokens (registry/apitoken.go): machine credentials of one gateway that act with a
// member role. Whoever may change the gateway's members may make and revoke them
// (admin.member.write); whoever may read the gateway sees them, never their value or hash.

// APITokenRequest is the body of POST /v1/gateways/{id}/api-tokens.
type APITokenRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
	// TTL is how long the token lives, as a Go duration ("720h"); empty: until revoked.
	TTL string `json:"ttl,omitempty"`
}

// APIToken is an API token as the admin API shows it.
type APIToken struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Role      string     `json:"role"`
	Created   time.Time  `json:"created"`
	Expires   *time.Time `json:"expires,omitempty"`
	CreatedBy string     `json:"created_by,omitempty"`
}

// APITokenResponse is the answer to POST /v1/gateways/{id}/api-tokens: the token, shown
// this once.
type APITokenResponse struct {
	APIToken APIToken `json:"api_token"`
	Token    string   `json:"token"`
}

func (s *Server) apiTokenRoutes() {
	s.mux.HandleFunc("POST /v1/gateways/{id}/api-tokens", s.createAPIToken)
	s.mux.HandleFunc("DELETE /v1/gateways/{id}/api-tokens/{token}", s.revokeAPIToken)
}

// apiTokensView lists g's API tokens by id.
func apiTokensView(g registry.Gateway) []APIToken {
	out := make([]APIToken, 0, len(g.APITokens))
	for _, id := range slices.Sorted(maps.Keys(g.APITokens)) {
		out = append(out, apiTokenView(id, g.APITokens[id]))
	}
	return out
}

func apiTokenView(id string, t registry.APIToken) APIToken {
	v := APIToken{ID: id, Name: t.Name, Role: t.Role, Created: t.Created, CreatedBy: t.CreatedBy}
	if !t.Expires.IsZero() {
		v.Expires = &t.Expires
	}
	return v
}

func (s *Server) createAPIToken(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, ok := s.authorize(w, r, "admin.member.write", id)
	if !ok {
		return
	}
	var req APITokenRequest
	if err := decode(r, &req); err != nil {
		s.failed(w, r, c, err)
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			s.failed(w, r, c, fmt.Errorf("%w: ttl: %q: want a positive Go duration such as 720h, or none", registry.ErrInvalid, req.TTL))
			return
		}
		ttl = d
	}
	c.ev.Details["role"], c.ev.Details["name"] = req.Role, req.Name
	token, tokenID, g, err := s.deps.Registry.CreateAPIToken(r.Context(), id, registry.NewAPIToken{
		Name: req.Name, Role: req.Role, TTL: ttl, CreatedBy: c.ev.Actor.Kind + ":" + c.ev.Actor.ID})
	if err != nil {
		s.failed(w, r, c, err)
		return
	}
	c.ev.Details["api_token"] = tokenID
	s.done(w, r, c, http.StatusCreated, APITokenResponse{APIToken: apiTokenView(tokenID, g.APITokens[tokenID]), Token: token})
}

func (s *Server) revokeAPIToken(w http.ResponseWriter, r *http.Request) {
	id, tokenID := r.PathValue("id"), r.PathValue("token")
	c, ok := s.authorize(w, r, "admin.member.write", id)
	if !ok {
		return
	}
	c.ev.Details["api_token"] = tokenID
	g, err := s.deps.Registry.RevokeAPIToken(r.Context(), id, tokenID)
	if err != nil {
		s.failed(w, r, c, err)
		return
	}
	s.done(w, r, c, http.StatusOK, s.shown(r.Context(), c, g))
}

// CreateAPIToken makes an API token of gateway id; the answer holds the token, once.
func (c *Client) CreateAPIToken(ctx context.Context, id string, req APITokenRequest) (APITokenResponse, error) {
	var out APITokenResponse
	return out, c.do(ctx, http.MethodPost, "/v1/gateways/"+url.PathEscape(id)+"/api-tokens", req, &out)
}

// RevokeAPIToken revokes API token tokenID of gateway id.
func (c *Client) RevokeAPIToken(ctx context.Context, id, tokenID string) (Gateway, error) {
	var out Gateway
	return out, c.do(ctx, http.MethodDelete, "/v1/gateways/"+url.PathEscape(id)+"/api-tokens/"+url.PathEscape(tokenID), nil, &out)
}
