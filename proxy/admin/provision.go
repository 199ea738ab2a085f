package admin

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/provisioner"
)

// Provisioner records gateways to provision and reports on them; provisioner.Provisioner
// implements it. The work itself is the reconciler's, in the background.
type Provisioner interface {
	Apply(ctx context.Context, s provisioner.Spec) (provisioner.Spec, bool, error)
	Destroy(ctx context.Context, id string) (provisioner.Spec, error)
	RotateToken(ctx context.Context, id string) (provisioner.Spec, error)
	Get(id string) (provisioner.Status, error)
}

// ProvisionRequest is the body of PUT /v1/gateways/{id}/provision.
type ProvisionRequest struct {
	Tenant string `json:"tenant"`
	Owner  string `json:"owner"`
	// Driver is "local" or "fly"; empty means the server's default.
	Driver string `json:"driver,omitempty"`
	// Image is the gateway image reference (fly: pinned by digest).
	Image string `json:"image,omitempty"`
}

// Provision is a provisioned gateway as the admin API shows it: its spec, phase, steps and
// where it answers. It never holds a token.
type Provision struct {
	provisioner.Status
	// URL is the gateway's public base URL (through moltgate).
	URL string `json:"url,omitempty"`
}

// provisionRoutes are the provisioning endpoints: a gateway's desired state is the resource
// /v1/gateways/{id}/provision. They are decided as actions of their own (admin.provision.*),
// platform admins' and the admin token's only; the gateway they name may not be registered
// yet (or any more).
func (s *Server) provisionRoutes() {
	if s.deps.Provisioner == nil {
		return
	}
	s.mux.HandleFunc("PUT /v1/gateways/{id}/provision", s.provision)
	s.mux.HandleFunc("GET /v1/gateways/{id}/provision", s.provisionStatus)
	s.mux.HandleFunc("DELETE /v1/gateways/{id}/provision", s.provisionChange("admin.provision.destroy", s.deps.Provisioner.Destroy))
	s.mux.HandleFunc("POST /v1/gateways/{id}/provision/rotate-token", s.provisionChange("admin.provision.rotate", s.deps.Provisioner.RotateToken))
	s.upgradeRoutes()
}

// authorizeProvision is authorize for a provisioning call: the events are filed under the
// tenant of the stored spec (never of a request body), or of the registry's record.
func (s *Server) authorizeProvision(w http.ResponseWriter, r *http.Request, action, id string) (*call, bool) {
	tenant := ""
	if st, err := s.deps.Provisioner.Get(id); err == nil {
		tenant = st.Spec.Tenant
	}
	return s.authorizeFor(w, r, action, id, tenant)
}

func (s *Server) provision(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, ok := s.authorizeProvision(w, r, "admin.provision.write", id)
	if !ok {
		return
	}
	var req ProvisionRequest
	if err := decode(r, &req); err != nil {
		s.provisionFailed(w, r, c, err)
		return
	}
	spec, changed, err := s.deps.Provisioner.Apply(r.Context(), provisioner.Spec{ID: id, Tenant: req.Tenant, Owner: req.Owner,
		Driver: req.Driver, Image: req.Image})
	if err != nil {
		s.provisionFailed(w, r, c, err)
		return
	}
	c.ev.Tenant = spec.Tenant
	c.ev.Details["owner"], c.ev.Details["driver"] = spec.Owner, spec.Driver
	if spec.Image != "" {
		c.ev.Details["image"] = spec.Image
	}
	status := http.StatusAccepted
	if !changed {
		status = http.StatusOK
	}
	s.provisionDone(w, r, c, status, id, spec)
}

// provisionChange serves destroy and rotate-token: a change of the stored spec.
func (s *Server) provisionChange(action string, change func(context.Context, string) (provisioner.Spec, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		c, ok := s.authorizeProvision(w, r, action, id)
		if !ok {
			return
		}
		spec, err := change(r.Context(), id)
		if err != nil {
			s.provisionFailed(w, r, c, err)
			return
		}
		s.provisionDone(w, r, c, http.StatusAccepted, id, spec)
	}
}

func (s *Server) provisionStatus(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, ok := s.authorizeProvision(w, r, "admin.provision.read", id)
	if !ok {
		return
	}
	st, err := s.deps.Provisioner.Get(id)
	if err != nil {
		s.provisionFailed(w, r, c, err)
		return
	}
	writeJSON(w, http.StatusOK, s.provisionView(st))
}

// provisionDone audits a change of a gateway's spec and answers with its status.
func (s *Server) provisionDone(w http.ResponseWriter, r *http.Request, c *call, status int, id string, spec provisioner.Spec) {
	c.ev.Details["generation"] = strconv.FormatUint(spec.Generation, 10)
	c.ev.Details["token_generation"] = strconv.FormatUint(spec.TokenGeneration, 10)
	st, err := s.deps.Provisioner.Get(id)
	if err != nil { // forgotten already: a destroy of a gateway nothing was made for
		st = provisioner.Status{Spec: spec, Phase: provisioner.PhaseDestroying}
	}
	s.done(w, r, c, status, s.provisionView(st))
}

func (s *Server) provisionView(st provisioner.Status) Provision {
	v := Provision{Status: st}
	if s.cfg.GatewayURL != nil {
		v.URL = s.cfg.GatewayURL(st.Spec.ID)
	}
	return v
}

// provisionFailed answers a provisioner error; its messages name fields and ids, never secrets.
func (s *Server) provisionFailed(w http.ResponseWriter, r *http.Request, c *call, err error) {
	answer := func(status int, reason, msg string) {
		s.answer(w, r, c, audit.TypeAdminDeny, "deny", status, reason, msg)
	}
	switch {
	case errors.Is(err, provisioner.ErrNotFound):
		answer(http.StatusNotFound, "not_provisioned", "gateway not provisioned")
	case errors.Is(err, provisioner.ErrInvalid), errors.Is(err, errBadBody):
		answer(http.StatusBadRequest, "invalid", err.Error())
	case errors.Is(err, provisioner.ErrExists):
		answer(http.StatusConflict, "gateway_exists", err.Error())
	case errors.Is(err, provisioner.ErrDestroying):
		answer(http.StatusConflict, "destroying", err.Error())
	default:
		s.deps.Logger.LogAttrs(r.Context(), slog.LevelError, "admin: provisioner call failed", slog.Any("err", err))
		s.answer(w, r, c, audit.TypeAdminChange, "error", http.StatusServiceUnavailable, "internal", "")
	}
}

// Provision asks for gateway id to be provisioned (or its owner or image changed).
func (c *Client) Provision(ctx context.Context, id string, req ProvisionRequest) (Provision, error) {
	var out Provision
	return out, c.do(ctx, http.MethodPut, "/v1/gateways/"+url.PathEscape(id)+"/provision", req, &out)
}

// ProvisionStatus returns gateway id's provisioning status.
func (c *Client) ProvisionStatus(ctx context.Context, id string) (Provision, error) {
	var out Provision
	return out, c.do(ctx, http.MethodGet, "/v1/gateways/"+url.PathEscape(id)+"/provision", nil, &out)
}

// Destroy asks for gateway id and everything provisioned for it to be removed.
func (c *Client) Destroy(ctx context.Context, id string) (Provision, error) {
	var out Provision
	return out, c.do(ctx, http.MethodDelete, "/v1/gateways/"+url.PathEscape(id)+"/provision", nil, &out)
}

// RotateToken asks for a new token for gateway id.
func (c *Client) RotateToken(ctx context.Context, id string) (Provision, error) {
	var out Provision
	return out, c.do(ctx, http.MethodPost, "/v1/gateways/"+url.PathEscape(id)+"/provision/rotate-token", nil, &out)
}
