package admin

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/keystore"
)

// KeyManager is the keystore's key records (provider API keys, channel credentials) as the
// admin API changes them; keystore.Keys implements it. Nothing in it returns a secret.
type KeyManager interface {
	Add(ctx context.Context, req keystore.AddRequest) (keystore.APIKey, error)
	Get(tenant, id string) (keystore.APIKey, error)
	List(tenant string) ([]keystore.APIKey, error)
	Verify(ctx context.Context, actor audit.Actor, tenant, id string) (keystore.APIKey, error)
	Activate(ctx context.Context, tenant, id string) (keystore.APIKey, error)
	Revoke(ctx context.Context, tenant, id string, force bool) (keystore.APIKey, error)
}

// KeyRotator starts master and tenant key rotations and reports on them; keystore.Rotator
// implements it. The rotations themselves run in the server's background (Rotator.Run), the
// master key's and each tenant's as jobs of their own.
type KeyRotator interface {
	StartMaster(ctx context.Context) (keystore.Job, error)
	StartTenant(ctx context.Context, tenant string) (keystore.Job, error)
	// Job is tenant's current or last job; tenant "" is the master key's.
	Job(tenant string) (keystore.Job, bool, error)
	// Jobs are the master key's current or last job and every tenant's.
	Jobs() ([]keystore.Job, error)
	Usage(ctx context.Context) (keystore.Usage, error)
}

// AddKeyRequest is the body of POST /v1/tenants/{tenant}/keys. Secret is the only time the
// key crosses the API; it is never returned, logged or audited.
type AddKeyRequest struct {
	Provider             string        `json:"provider"`
	Kind                 keystore.Kind `json:"kind,omitempty"`
	Label                string        `json:"label,omitempty"`
	Secret               string        `json:"secret"`
	Scope                []string      `json:"scope,omitempty"`
	MonthlySpendCapCents int64         `json:"monthly_spend_cap_cents,omitempty"`
}

// LogValue keeps the secret out of structured logs.
func (r AddKeyRequest) LogValue() slog.Value {
	return slog.GroupValue(slog.String("provider", r.Provider), slog.String("kind", string(r.Kind)),
		slog.String("secret", "[redacted]"))
}

// String keeps the secret out of %v and %s.
func (r AddKeyRequest) String() string {
	return "AddKeyRequest{provider=" + r.Provider + " kind=" + string(r.Kind) + " secret=[redacted]}"
}

// GoString keeps the secret out of %#v.
func (r AddKeyRequest) GoString() string { return r.String() }

// RevokeKeyRequest is the optional body of POST /v1/tenants/{tenant}/keys/{id}/revoke.
type RevokeKeyRequest struct {
	// Force revokes the active key, leaving its provider without one.
	Force bool `json:"force,omitempty"`
}

// Rotation is the answer to the keystore rotation endpoints: the current or last job and how
// many records each key version seals.
type Rotation struct {
	// Job is the job the call started (or joined), the tenant's current or last one (GET
	// /v1/tenants/{tenant}/rotation), or the one of Jobs started last (GET /v1/keystore/rotation).
	Job *keystore.Job `json:"job,omitempty"`
	// Jobs are the master key's current or last job, then each tenant's (GET
	// /v1/keystore/rotation only).
	Jobs []keystore.Job `json:"jobs,omitempty"`
	// Usage counts records per key version; empty when asked for with ?usage=0, and in a
	// tenant's rotation (counting reads every tenant's records).
	Usage keystore.Usage `json:"usage"`
}

func (s *Server) keyRoutes() {
	if s.deps.Keys != nil {
		s.mux.HandleFunc("GET /v1/tenants/{tenant}/keys", s.listKeys)
		s.mux.HandleFunc("POST /v1/tenants/{tenant}/keys", s.addKey)
		s.mux.HandleFunc("GET /v1/tenants/{tenant}/keys/{id}", s.showKey)
		s.mux.HandleFunc("POST /v1/tenants/{tenant}/keys/{id}/verify", s.keyChange("admin.keys.verify"))
		s.mux.HandleFunc("POST /v1/tenants/{tenant}/keys/{id}/activate", s.keyChange("admin.keys.activate"))
		s.mux.HandleFunc("POST /v1/tenants/{tenant}/keys/{id}/revoke", s.keyChange("admin.keys.revoke"))
	}
	if s.deps.Rotator != nil {
		s.mux.HandleFunc("POST /v1/tenants/{tenant}/rotate-keys", s.rotateTenant)
		s.mux.HandleFunc("GET /v1/tenants/{tenant}/rotation", s.tenantRotation)
		s.mux.HandleFunc("POST /v1/keystore/rotate-master", s.rotateMaster)
		s.mux.HandleFunc("GET /v1/keystore/rotation", s.rotation)
	}
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	tenant := r.PathValue("tenant")
	c, ok := s.authorizeFor(w, r, "admin.keys.read", "", tenant)
	if !ok {
		return
	}
	keys, err := s.deps.Keys.List(tenant)
	if err != nil {
		s.keyFailed(w, r, c, err)
		return
	}
	writeJSON(w, http.StatusOK, keys)
}

func (s *Server) showKey(w http.ResponseWriter, r *http.Request) {
	tenant, id := r.PathValue("tenant"), r.PathValue("id")
	c, ok := s.authorizeFor(w, r, "admin.keys.read", "", tenant)
	if !ok {
		return
	}
	k, err := s.deps.Keys.Get(tenant, id)
	if err != nil {
		s.keyFailed(w, r, c, err)
		return
	}
	writeJSON(w, http.StatusOK, k)
}

func (s *Server) addKey(w http.ResponseWriter, r *http.Request) {
	tenant := r.PathValue("tenant")
	c, ok := s.authorizeFor(w, r, "admin.keys.add", "", tenant)
	if !ok {
		return
	}
	var req AddKeyRequest
	if err := decode(r, &req); err != nil {
		s.keyFailed(w, r, c, err)
		return
	}
	c.ev.Details["provider"] = req.Provider
	secret := keystore.Secret(req.Secret)
	req.Secret = ""
	k, err := s.deps.Keys.Add(r.Context(), keystore.AddRequest{Tenant: tenant, Provider: req.Provider, Kind: req.Kind,
		Label: req.Label, Secret: secret, Scope: req.Scope, MonthlySpendCapCents: req.MonthlySpendCapCents})
	clear(secret) // Add clears it too; this covers a refusal before it
	if err != nil {
		s.keyFailed(w, r, c, err)
		return
	}
	s.keyDone(w, r, c, http.StatusCreated, k)
}

// keyChange serves verify, activate and revoke of one key.
func (s *Server) keyChange(action string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tenant, id := r.PathValue("tenant"), r.PathValue("id")
		c, ok := s.authorizeFor(w, r, action, "", tenant)
		if !ok {
			return
		}
		c.ev.Details["key"] = id
		var k keystore.APIKey
		var err error
		switch action {
		case "admin.keys.verify":
			k, err = s.deps.Keys.Verify(r.Context(), c.ev.Actor, tenant, id)
		case "admin.keys.activate":
			k, err = s.deps.Keys.Activate(r.Context(), tenant, id)
		case "admin.keys.revoke":
			var req RevokeKeyRequest
			if r.ContentLength != 0 {
				if err := decode(r, &req); err != nil {
					s.keyFailed(w, r, c, err)
					return
				}
			}
			if req.Force {
				c.ev.Details["force"] = "true"
			}
			k, err = s.deps.Keys.Revoke(r.Context(), tenant, id, req.Force)
		}
		if err != nil {
			s.keyFailed(w, r, c, err)
			return
		}
		s.keyDone(w, r, c, http.StatusOK, k)
	}
}

func (s *Server) rotateTenant(w http.ResponseWriter, r *http.Request) {
	tenant := r.PathValue("tenant")
	c, ok := s.authorizeFor(w, r, "admin.keys.rotate", "", tenant)
	if !ok {
		return
	}
	s.startRotation(w, r, c, func(ctx context.Context) (keystore.Job, error) { return s.deps.Rotator.StartTenant(ctx, tenant) })
}

func (s *Server) rotateMaster(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authorizeFor(w, r, "admin.keystore.rotate", "", "")
	if !ok {
		return
	}
	s.startRotation(w, r, c, s.deps.Rotator.StartMaster)
}

func (s *Server) startRotation(w http.ResponseWriter, r *http.Request, c *call, start func(context.Context) (keystore.Job, error)) {
	j, err := start(r.Context())
	if err != nil {
		s.keyFailed(w, r, c, err)
		return
	}
	c.ev.Details["rotation"], c.ev.Details["master_version"] = j.Kind, itoa(j.Master)
	if j.Kind == "tenant" {
		c.ev.Details["salt_version"] = itoa(j.Salt)
	}
	s.done(w, r, c, http.StatusAccepted, Rotation{Job: &j})
}

func (s *Server) rotation(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authorizeFor(w, r, "admin.keystore.read", "", "")
	if !ok {
		return
	}
	var out Rotation
	jobs, err := s.deps.Rotator.Jobs()
	if err == nil && r.URL.Query().Get("usage") != "0" { // counting reads every record
		out.Usage, err = s.deps.Rotator.Usage(r.Context())
	}
	if err != nil {
		s.keyFailed(w, r, c, err)
		return
	}
	out.Jobs = jobs
	for i := range jobs {
		if out.Job == nil || jobs[i].Started.After(out.Job.Started) {
			out.Job = &jobs[i]
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// tenantRotation answers the tenant's current or last rotation job, for the tenant's admins.
func (s *Server) tenantRotation(w http.ResponseWriter, r *http.Request) {
	tenant := r.PathValue("tenant")
	c, ok := s.authorizeFor(w, r, "admin.keys.read", "", tenant)
	if !ok {
		return
	}
	var out Rotation
	j, found, err := s.deps.Rotator.Job(tenant)
	if err != nil {
		s.keyFailed(w, r, c, err)
		return
	}
	if found {
		out.Job = &j
	}
	writeJSON(w, http.StatusOK, out)
}

// keyDone audits a key change with what identifies the key (never the secret) and answers.
func (s *Server) keyDone(w http.ResponseWriter, r *http.Request, c *call, status int, k keystore.APIKey) {
	c.ev.Details["key"], c.ev.Details["provider"], c.ev.Details["kind"] = k.ID, k.Provider, string(k.Kind)
	c.ev.Details["fingerprint"], c.ev.Details["state"] = k.Fingerprint, string(k.State)
	s.done(w, r, c, status, k)
}

// keyFailed answers a keystore error. Keystore error messages never contain a secret: they
// name the fields and the caller's non-secret values only.
func (s *Server) keyFailed(w http.ResponseWriter, r *http.Request, c *call, err error) {
	answer := func(status int, reason, msg string) {
		s.answer(w, r, c, audit.TypeAdminDeny, "deny", status, reason, msg)
	}
	switch {
	case errors.Is(err, keystore.ErrKeyNotFound):
		answer(http.StatusNotFound, "unknown_key", "no such key")
	case errors.Is(err, keystore.ErrKeyInvalid), errors.Is(err, errBadBody):
		answer(http.StatusBadRequest, "invalid", err.Error())
	case errors.Is(err, keystore.ErrKeyState):
		answer(http.StatusConflict, "key_state", err.Error())
	case errors.Is(err, keystore.ErrRotationBusy):
		answer(http.StatusConflict, "rotation_busy", err.Error())
	case errors.Is(err, keystore.ErrKeyRejected):
		answer(http.StatusUnprocessableEntity, "key_rejected", err.Error())
	case errors.Is(err, keystore.ErrNoVerifier):
		answer(http.StatusUnprocessableEntity, "no_verifier", err.Error())
	default:
		s.deps.Logger.LogAttrs(r.Context(), slog.LevelError, "admin: keystore call failed", slog.Any("err", err))
		s.answer(w, r, c, audit.TypeAdminChange, "error", http.StatusServiceUnavailable, "internal", "")
	}
}

func itoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }
