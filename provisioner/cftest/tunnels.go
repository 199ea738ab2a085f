package cftest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

type tunnel struct {
	seq       uint64
	ID        string
	Name      string
	ConfigSrc string
	CreatedAt time.Time
	DeletedAt time.Time
	secret    []byte
	config    *tunnelConfig
	version   int
	updatedAt time.Time
}

// IngressRule is one rule of a tunnel's ingress configuration.
type IngressRule struct {
	Hostname      string          `json:"hostname,omitempty"`
	Service       string          `json:"service"`
	Path          string          `json:"path,omitempty"`
	OriginRequest json.RawMessage `json:"originRequest,omitempty"`
}

type tunnelConfig struct {
	Ingress       []IngressRule   `json:"ingress"`
	OriginRequest json.RawMessage `json:"originRequest,omitempty"`
	WarpRouting   json.RawMessage `json:"warp-routing,omitempty"`
}

type tunnelJSON struct {
	ID              string     `json:"id"`
	AccountTag      string     `json:"account_tag"`
	ConfigSrc       string     `json:"config_src"`
	Connections     []any      `json:"connections"`
	ConnsActiveAt   *time.Time `json:"conns_active_at"`
	ConnsInactiveAt *time.Time `json:"conns_inactive_at"`
	CreatedAt       time.Time  `json:"created_at"`
	DeletedAt       *time.Time `json:"deleted_at"`
	Metadata        struct{}   `json:"metadata"`
	Name            string     `json:"name"`
	RemoteConfig    bool       `json:"remote_config"`
	Status          string     `json:"status"`
	TunType         string     `json:"tun_type"`
}

func (s *Server) tunnelJSON(t *tunnel) tunnelJSON {
	j := tunnelJSON{
		ID: t.ID, AccountTag: s.cfg.AccountID, ConfigSrc: t.ConfigSrc, Connections: []any{},
		CreatedAt: t.CreatedAt, Name: t.Name, RemoteConfig: t.ConfigSrc == "cloudflare",
		Status: "inactive", TunType: "cfd_tunnel",
	}
	if !t.DeletedAt.IsZero() {
		d := t.DeletedAt
		j.DeletedAt = &d
	}
	return j
}

// listTunnels filters by name, uuid, include_prefix, exclude_prefix and is_deleted
// (absent: deleted tunnels are listed too, as the API does).
func (s *Server) listTunnels(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var out []tunnelJSON
	for _, t := range sortedByCreation(s.tunnels, func(t *tunnel) uint64 { return t.seq }) {
		switch {
		case q.Has("name") && t.Name != q.Get("name"),
			q.Has("uuid") && t.ID != q.Get("uuid"),
			q.Has("include_prefix") && !strings.HasPrefix(t.Name, q.Get("include_prefix")),
			q.Has("exclude_prefix") && strings.HasPrefix(t.Name, q.Get("exclude_prefix")),
			q.Get("is_deleted") == "true" && t.DeletedAt.IsZero(),
			q.Get("is_deleted") == "false" && !t.DeletedAt.IsZero():
			continue
		}
		out = append(out, s.tunnelJSON(t))
	}
	writePage(w, r, s, out)
}

// createTunnel refuses a name a live tunnel has with 409, code 1013.
func (s *Server) createTunnel(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name         string `json:"name"`
		ConfigSrc    string `json:"config_src"`
		TunnelSecret string `json:"tunnel_secret"`
	}
	if !decode(w, r, &req) {
		return
	}
	if req.Name == "" {
		writeError(w, http.StatusBadRequest, 1001, "tunnel name is required")
		return
	}
	if req.ConfigSrc == "" {
		req.ConfigSrc = "local"
	}
	if req.ConfigSrc != "local" && req.ConfigSrc != "cloudflare" {
		writeError(w, http.StatusBadRequest, 1001, "invalid config_src")
		return
	}
	for _, t := range s.tunnels {
		if t.Name == req.Name && t.DeletedAt.IsZero() {
			writeError(w, http.StatusConflict, CodeTunnelNameTaken, "You already have a tunnel with this name.")
			return
		}
	}
	secret := make([]byte, 32)
	if req.TunnelSecret != "" {
		b, err := base64.StdEncoding.DecodeString(req.TunnelSecret)
		if err != nil || len(b) < 32 {
			writeError(w, http.StatusBadRequest, 1001, "tunnel_secret must be at least 32 bytes, base64")
			return
		}
		secret = b
	} else {
		_, _ = rand.Read(secret)
	}
	t := &tunnel{ID: s.uuid(), seq: s.seq, Name: req.Name, ConfigSrc: req.ConfigSrc, CreatedAt: s.now(), secret: secret}
	s.tunnels[t.ID] = t
	writeResult(w, http.StatusOK, s.tunnelJSON(t))
}

// findTunnel answers 404 for an unknown id; live requires the tunnel not deleted.
func (s *Server) findTunnel(w http.ResponseWriter, r *http.Request, live bool) (*tunnel, bool) {
	t, ok := s.tunnels[r.PathValue("id")]
	if !ok || (live && !t.DeletedAt.IsZero()) {
		writeError(w, http.StatusNotFound, CodeNotFound, "Tunnel not found")
		return nil, false
	}
	return t, true
}

// getTunnel answers a deleted tunnel too, with its deleted_at.
func (s *Server) getTunnel(w http.ResponseWriter, r *http.Request) {
	if t, ok := s.findTunnel(w, r, false); ok {
		writeResult(w, http.StatusOK, s.tunnelJSON(t))
	}
}

// deleteTunnel marks a live tunnel deleted (it stays listed); a deleted one is 404.
func (s *Server) deleteTunnel(w http.ResponseWriter, r *http.Request) {
	t, ok := s.findTunnel(w, r, true)
	if !ok {
		return
	}
	t.DeletedAt = s.now()
	t.config = nil
	writeResult(w, http.StatusOK, s.tunnelJSON(t))
}

type configJSON struct {
	AccountID string        `json:"account_id"`
	TunnelID  string        `json:"tunnel_id"`
	Version   int           `json:"version"`
	Config    *tunnelConfig `json:"config"`
	Source    string        `json:"source"`
	CreatedAt time.Time     `json:"created_at"`
}

func (s *Server) configJSON(t *tunnel) configJSON {
	return configJSON{AccountID: s.cfg.AccountID, TunnelID: t.ID, Version: t.version, Config: t.config,
		Source: "cloudflare", CreatedAt: t.updatedAt}
}

// getTunnelConfig answers config null until a configuration is put.
func (s *Server) getTunnelConfig(w http.ResponseWriter, r *http.Request) {
	if t, ok := s.findTunnel(w, r, true); ok {
		writeResult(w, http.StatusOK, s.configJSON(t))
	}
}

// putTunnelConfig replaces the configuration of a remotely managed tunnel. As cloudflared
// requires, every rule but the last has a hostname and the last matches everything (code
// 1056 is the fake's own).
func (s *Server) putTunnelConfig(w http.ResponseWriter, r *http.Request) {
	t, ok := s.findTunnel(w, r, true)
	if !ok {
		return
	}
	if t.ConfigSrc != "cloudflare" {
		writeError(w, http.StatusBadRequest, 1056, "tunnel is locally managed")
		return
	}
	var req struct {
		Config *tunnelConfig `json:"config"`
	}
	if !decode(w, r, &req) {
		return
	}
	if req.Config == nil || len(req.Config.Ingress) == 0 {
		writeError(w, http.StatusBadRequest, 1056, "config.ingress: at least one rule is required")
		return
	}
	rules := req.Config.Ingress
	for i, rule := range rules {
		last := i == len(rules)-1
		switch {
		case rule.Service == "":
			writeError(w, http.StatusBadRequest, 1056, "config.ingress: every rule needs a service")
			return
		case last && (rule.Hostname != "" || rule.Path != ""):
			writeError(w, http.StatusBadRequest, 1056, "config.ingress: the last rule must match all URLs (no hostname or path)")
			return
		case !last && rule.Hostname == "":
			writeError(w, http.StatusBadRequest, 1056, "config.ingress: only the last rule may match all URLs")
			return
		}
	}
	t.config = req.Config
	t.version++
	t.updatedAt = s.now()
	writeResult(w, http.StatusOK, s.configJSON(t))
}

// getTunnelToken answers the connector token: base64 of {"a":account,"t":tunnel,"s":secret}.
func (s *Server) getTunnelToken(w http.ResponseWriter, r *http.Request) {
	if t, ok := s.findTunnel(w, r, true); ok {
		writeResult(w, http.StatusOK, tunnelToken(s.cfg.AccountID, t))
	}
}

func tunnelToken(account string, t *tunnel) string {
	b, _ := json.Marshal(map[string]string{"a": account, "t": t.ID, "s": base64.StdEncoding.EncodeToString(t.secret)})
	return base64.StdEncoding.EncodeToString(b)
}
