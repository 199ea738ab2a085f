package admin

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/proxy"
)

// AuditQuerier reads audit events back. When Deps.Audit implements it (audit.FileLog does),
// GET /v1/audit serves them.
type AuditQuerier interface {
	Query(q audit.Query, fn func(audit.Event) bool) error
}

// Bounds of one GET /v1/audit page.
const (
	defaultAuditLimit = 100
	maxAuditLimit     = 1000
	maxAuditParam     = 200 // bytes of one query parameter
)

// AuditPage is the answer to GET /v1/audit: the selected events in order (per replica, by
// seq), at most limit of them; Truncated says more match (ask again with a later since).
type AuditPage struct {
	Events    []audit.Event `json:"events"`
	Truncated bool          `json:"truncated"`
}

// AuditQuery selects events for Client.Audit; empty fields match everything.
type AuditQuery struct {
	Tenant, Gateway, Type string
	Since, Until          time.Time
	Limit                 int
}

var errBadAuditQuery = errors.New("admin: audit query: tenant, gateway, type (strings), since, until (RFC 3339), limit (1-1000)")

func (s *Server) auditRoutes() {
	s.mux.HandleFunc("GET /v1/audit", s.auditRead)
}

// auditRead serves GET /v1/audit?tenant=&gateway=&type=&since=&until=&limit=. The policy
// decides admin.audit.read on the tenant asked for: a tenant's organization admins read only
// that tenant's events, and only the admin token and platform admins may read every tenant's
// (no tenant given). Every read is itself an audit.read event.
func (s *Server) auditRead(w http.ResponseWriter, r *http.Request) {
	params := r.URL.Query()
	tenant := ""
	if v := params["tenant"]; len(v) == 1 && len(v[0]) <= maxAuditParam {
		tenant = v[0] // an invalid one is decided as none, then refused below as bad input
	}
	c, ok := s.authorizeFor(w, r, "admin.audit.read", "", tenant)
	if !ok {
		return
	}
	q, limit, err := parseAuditQuery(params)
	if err != nil {
		s.answer(w, r, c, audit.TypeAdminDeny, "deny", http.StatusBadRequest, "invalid", err.Error())
		return
	}
	q.Tenant = tenant // never wider than what the policy allowed
	querier, ok := s.deps.Audit.(AuditQuerier)
	if !ok {
		s.refuse(w, r, c, audit.TypeAdminDeny, http.StatusNotFound, "audit_not_readable")
		return
	}
	page := AuditPage{Events: []audit.Event{}}
	err = querier.Query(q, func(e audit.Event) bool {
		if len(page.Events) == limit {
			page.Truncated = true
			return false
		}
		page.Events = append(page.Events, e)
		return true
	})
	if err != nil {
		s.deps.Logger.LogAttrs(r.Context(), slog.LevelError, "admin: reading audit events failed", slog.Any("err", err))
		s.answer(w, r, c, audit.TypeAuditRead, "error", http.StatusServiceUnavailable, "internal", "")
		return
	}
	for k, v := range map[string]string{"gateway": q.Gateway, "type": q.Type, "count": strconv.Itoa(len(page.Events))} {
		if v != "" {
			c.ev.Details[k] = v
		}
	}
	c.ev.Type, c.ev.Outcome = audit.TypeAuditRead, "success"
	if !s.emit(r.Context(), c.ev) {
		// Reading the audit trail is itself audited: no record, no page.
		proxy.Refuse(w, http.StatusServiceUnavailable, "audit_unavailable")
		return
	}
	writeJSON(w, http.StatusOK, page)
}

func parseAuditQuery(params url.Values) (audit.Query, int, error) {
	for k, v := range params {
		switch k {
		case "tenant", "gateway", "type", "since", "until", "limit":
			if len(v) != 1 || len(v[0]) > maxAuditParam {
				return audit.Query{}, 0, errBadAuditQuery
			}
		default:
			return audit.Query{}, 0, errBadAuditQuery
		}
	}
	q := audit.Query{Gateway: params.Get("gateway"), Type: params.Get("type")}
	for _, t := range []struct {
		key string
		dst *time.Time
	}{{"since", &q.Since}, {"until", &q.Until}} {
		if v := params.Get(t.key); v != "" {
			ts, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return q, 0, errBadAuditQuery
			}
			*t.dst = ts
		}
	}
	limit := defaultAuditLimit
	if v := params.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxAuditLimit {
			return q, 0, errBadAuditQuery
		}
		limit = n
	}
	return q, limit, nil
}

// Audit reads audit events the caller may see (GET /v1/audit).
func (c *Client) Audit(ctx context.Context, q AuditQuery) (AuditPage, error) {
	v := url.Values{}
	for k, s := range map[string]string{"tenant": q.Tenant, "gateway": q.Gateway, "type": q.Type} {
		if s != "" {
			v.Set(k, s)
		}
	}
	for k, t := range map[string]time.Time{"since": q.Since, "until": q.Until} {
		if !t.IsZero() {
			v.Set(k, t.Format(time.RFC3339Nano))
		}
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var out AuditPage
	path := "/v1/audit"
	if len(v) > 0 {
		path += "?" + v.Encode()
	}
	return out, c.do(ctx, http.MethodGet, path, nil, &out)
}
