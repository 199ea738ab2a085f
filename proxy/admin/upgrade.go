package admin

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/provisioner"
)

// Upgrades rolls gateways to new images, one or the fleet; provisioner.Provisioner
// implements it. Unlike the other provisioning calls, these run while the request waits:
// a request that ends (the CLI stopped) stops the upgrade where it is, recorded, and the
// same call again resumes it.
type Upgrades interface {
	Upgrade(ctx context.Context, id, image string) (provisioner.Status, error)
	UpgradeFleet(ctx context.Context, fs provisioner.FleetSpec, progress func(provisioner.FleetProgress)) (provisioner.Fleet, error)
	CurrentFleet() (provisioner.Fleet, error)
	List() ([]provisioner.Status, error)
}

// UpgradeRequest is the body of POST /v1/gateways/{id}/provision/upgrade.
type UpgradeRequest struct {
	// Image is the image to roll the gateway to, pinned by digest.
	Image string `json:"image"`
}

// FleetView is a fleet upgrade as the admin API shows it: the plan and its progress, and
// the image every provisioned gateway runs.
type FleetView struct {
	// Fleet is the last fleet upgrade; nil if there was none.
	Fleet    *provisioner.Fleet `json:"fleet,omitempty"`
	Gateways []GatewayImage     `json:"gateways"`
}

// GatewayImage is the image of one gateway, and its last upgrade.
type GatewayImage struct {
	ID     string `json:"id"`
	Driver string `json:"driver"`
	// Image is the image it runs as far as the provisioner knows, "" while unknown.
	Image   string                     `json:"image,omitempty"`
	Digest  string                     `json:"digest,omitempty"`
	Upgrade *provisioner.UpgradeStatus `json:"upgrade,omitempty"`
}

// upgradeRoutes are the upgrade endpoints, when the provisioner upgrades: decided as
// admin.provision.upgrade (admin.provision.read to read a fleet upgrade).
func (s *Server) upgradeRoutes() {
	u, ok := s.deps.Provisioner.(Upgrades)
	if !ok {
		return
	}
	s.mux.HandleFunc("POST /v1/gateways/{id}/provision/upgrade", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		c, ok := s.authorizeProvision(w, r, "admin.provision.upgrade", id)
		if !ok {
			return
		}
		var req UpgradeRequest
		if err := decode(r, &req); err != nil {
			s.provisionFailed(w, r, c, err)
			return
		}
		c.ev.Details["image"] = req.Image
		st, err := u.Upgrade(r.Context(), id, req.Image)
		if err != nil {
			s.upgradeFailed(w, r, c, err)
			return
		}
		s.done(w, r, c, http.StatusOK, s.provisionView(st))
	})
	s.mux.HandleFunc("POST /v1/upgrades", func(w http.ResponseWriter, r *http.Request) {
		c, ok := s.authorizeFor(w, r, "admin.provision.upgrade", "", "")
		if !ok {
			return
		}
		var fs provisioner.FleetSpec
		if err := decode(r, &fs); err != nil {
			s.provisionFailed(w, r, c, err)
			return
		}
		c.ev.Details["image"] = fs.Image
		c.ev.Details["canary"], c.ev.Details["batch"] = strconv.Itoa(fs.Canary), strconv.Itoa(fs.Batch)
		f, err := u.UpgradeFleet(r.Context(), fs, nil)
		if err != nil {
			s.upgradeFailed(w, r, c, err)
			return
		}
		s.done(w, r, c, http.StatusOK, f)
	})
	s.mux.HandleFunc("GET /v1/upgrades", func(w http.ResponseWriter, r *http.Request) {
		c, ok := s.authorizeFor(w, r, "admin.provision.read", "", "")
		if !ok {
			return
		}
		var v FleetView
		f, err := u.CurrentFleet()
		switch {
		case err == nil:
			v.Fleet = &f
		case !errors.Is(err, provisioner.ErrNotFound):
			s.provisionFailed(w, r, c, err)
			return
		}
		all, err := u.List()
		if err != nil {
			s.provisionFailed(w, r, c, err)
			return
		}
		v.Gateways = make([]GatewayImage, 0, len(all))
		for _, st := range all {
			v.Gateways = append(v.Gateways, GatewayImage{ID: st.Spec.ID, Driver: st.Spec.Driver, Image: st.Image,
				Digest: provisioner.Digest(st.Image), Upgrade: st.Upgrade})
		}
		writeJSON(w, http.StatusOK, v)
	})
}

// upgradeFailed answers an upgrade's error: a failed health check is the gateway's failure
// (502, the message says which and what was rolled back), a fleet upgrade running
// elsewhere a conflict; the rest as any provisioning error.
func (s *Server) upgradeFailed(w http.ResponseWriter, r *http.Request, c *call, err error) {
	switch {
	case errors.Is(err, provisioner.ErrUpgradeFailed):
		s.answer(w, r, c, audit.TypeAdminChange, "error", http.StatusBadGateway, "upgrade_failed", err.Error())
	case errors.Is(err, provisioner.ErrLeaseHeld):
		s.answer(w, r, c, audit.TypeAdminDeny, "deny", http.StatusConflict, "busy", err.Error())
	default:
		s.provisionFailed(w, r, c, err)
	}
}

// Upgrade rolls gateway id to image and waits until it is healthy (or failed).
func (c *Client) Upgrade(ctx context.Context, id, image string) (Provision, error) {
	var out Provision
	return out, c.do(ctx, http.MethodPost, "/v1/gateways/"+url.PathEscape(id)+"/provision/upgrade", UpgradeRequest{Image: image}, &out)
}

// UpgradeFleet runs (or resumes) a fleet upgrade and waits for its end.
func (c *Client) UpgradeFleet(ctx context.Context, fs provisioner.FleetSpec) (provisioner.Fleet, error) {
	var out provisioner.Fleet
	return out, c.do(ctx, http.MethodPost, "/v1/upgrades", fs, &out)
}

// Fleet returns the last fleet upgrade and every gateway's image.
func (c *Client) Fleet(ctx context.Context) (FleetView, error) {
	var out FleetView
	return out, c.do(ctx, http.MethodGet, "/v1/upgrades", nil, &out)
}
