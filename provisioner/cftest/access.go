package cftest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"
)

type serviceToken struct {
	seq       uint64
	ID        string
	Name      string
	ClientID  string
	secret    string
	Duration  string
	CreatedAt time.Time
	ExpiresAt time.Time
}

type serviceTokenJSON struct {
	ID           string    `json:"id"`
	ClientID     string    `json:"client_id"`
	ClientSecret string    `json:"client_secret,omitempty"`
	Name         string    `json:"name"`
	Duration     string    `json:"duration"`
	Enabled      bool      `json:"enabled"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
	ExpiresAt    time.Time `json:"expires_at"`
}

func (t *serviceToken) json() serviceTokenJSON {
	return serviceTokenJSON{ID: t.ID, ClientID: t.ClientID, Name: t.Name, Duration: t.Duration, Enabled: true,
		CreatedAt: t.CreatedAt, UpdatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// listServiceTokens filters by name (exact) and search (substring). Names are not unique.
func (s *Server) listServiceTokens(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var out []serviceTokenJSON
	for _, t := range sortedByCreation(s.tokens, func(t *serviceToken) uint64 { return t.seq }) {
		if q.Has("name") && t.Name != q.Get("name") || q.Has("search") && !strings.Contains(t.Name, q.Get("search")) {
			continue
		}
		out = append(out, t.json())
	}
	writePage(w, r, s, out)
}

// createServiceToken answers the client secret, in this answer only.
func (s *Server) createServiceToken(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name     string `json:"name"`
		Duration string `json:"duration"`
	}
	if !decode(w, r, &req) {
		return
	}
	if req.Name == "" {
		writeError(w, http.StatusBadRequest, 12000, "name is required")
		return
	}
	dur := 8760 * time.Hour
	if req.Duration == "" {
		req.Duration = "8760h"
	} else if d, err := time.ParseDuration(req.Duration); err == nil && d > 0 {
		dur = d
	} else if req.Duration != "forever" {
		writeError(w, http.StatusBadRequest, 12000, "invalid duration")
		return
	}
	t := &serviceToken{ID: s.uuid(), seq: s.seq, Name: req.Name, ClientID: randomHex(16) + ".access",
		secret: randomHex(32), Duration: req.Duration, CreatedAt: s.now(), ExpiresAt: s.now().Add(dur)}
	s.tokens[t.ID] = t
	j := t.json()
	j.ClientSecret = t.secret
	writeResult(w, http.StatusOK, j)
}

func (s *Server) findServiceToken(w http.ResponseWriter, r *http.Request) (*serviceToken, bool) {
	t, ok := s.tokens[r.PathValue("id")]
	if !ok {
		writeError(w, http.StatusNotFound, 12001, "access.api.error.not_found")
	}
	return t, ok
}

func (s *Server) getServiceToken(w http.ResponseWriter, r *http.Request) {
	if t, ok := s.findServiceToken(w, r); ok {
		writeResult(w, http.StatusOK, t.json())
	}
}

// deleteServiceToken deletes the token; policies that name it keep a dangling rule, as
// nothing then matches it.
func (s *Server) deleteServiceToken(w http.ResponseWriter, r *http.Request) {
	if t, ok := s.findServiceToken(w, r); ok {
		delete(s.tokens, t.ID)
		writeResult(w, http.StatusOK, t.json())
	}
}

type policy struct {
	seq       uint64
	ID        string
	Name      string
	Decision  string
	Include   []json.RawMessage
	Exclude   []json.RawMessage
	Require   []json.RawMessage
	CreatedAt time.Time
	UpdatedAt time.Time
}

type policyJSON struct {
	ID              string            `json:"id"`
	Name            string            `json:"name"`
	Decision        string            `json:"decision"`
	Include         []json.RawMessage `json:"include"`
	Exclude         []json.RawMessage `json:"exclude"`
	Require         []json.RawMessage `json:"require"`
	AppCount        int               `json:"app_count"`
	Reusable        bool              `json:"reusable"`
	SessionDuration string            `json:"session_duration"`
	CreatedAt       time.Time         `json:"created_at"`
	UpdatedAt       time.Time         `json:"updated_at"`
	Precedence      int               `json:"precedence,omitempty"`
}

func (s *Server) policyJSON(p *policy) policyJSON {
	n := 0
	for _, a := range s.apps {
		if slices.Contains(a.Policies, p.ID) {
			n++
		}
	}
	return policyJSON{ID: p.ID, Name: p.Name, Decision: p.Decision, Include: orEmpty(p.Include),
		Exclude: orEmpty(p.Exclude), Require: orEmpty(p.Require), AppCount: n, Reusable: true,
		SessionDuration: "24h", CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt}
}

func orEmpty(r []json.RawMessage) []json.RawMessage {
	if r == nil {
		return []json.RawMessage{}
	}
	return r
}

type policyBody struct {
	Name     string            `json:"name"`
	Decision string            `json:"decision"`
	Include  []json.RawMessage `json:"include"`
	Exclude  []json.RawMessage `json:"exclude"`
	Require  []json.RawMessage `json:"require"`
}

// checkPolicy validates a policy body: a name, a known decision, at least one include
// rule, and service_token rules naming existing tokens (codes 12000 and 12002 are the
// fake's own). Callers hold s.mu.
func (s *Server) checkPolicy(w http.ResponseWriter, b policyBody) bool {
	switch {
	case b.Name == "":
		writeError(w, http.StatusBadRequest, 12000, "name is required")
		return false
	case !slices.Contains([]string{"allow", "deny", "non_identity", "bypass"}, b.Decision):
		writeError(w, http.StatusBadRequest, 12000, "invalid decision")
		return false
	case len(b.Include) == 0:
		writeError(w, http.StatusBadRequest, 12000, "include: at least one rule is required")
		return false
	}
	for _, rules := range [][]json.RawMessage{b.Include, b.Exclude, b.Require} {
		for _, raw := range rules {
			var rule struct {
				ServiceToken *struct {
					TokenID string `json:"token_id"`
				} `json:"service_token"`
			}
			if err := json.Unmarshal(raw, &rule); err != nil {
				writeError(w, http.StatusBadRequest, 12000, "invalid rule")
				return false
			}
			if rule.ServiceToken != nil && s.tokens[rule.ServiceToken.TokenID] == nil {
				writeError(w, http.StatusBadRequest, 12002, "service_token: no such service token")
				return false
			}
		}
	}
	return true
}

func (s *Server) listPolicies(w http.ResponseWriter, r *http.Request) {
	var out []policyJSON
	for _, p := range sortedByCreation(s.policies, func(p *policy) uint64 { return p.seq }) {
		out = append(out, s.policyJSON(p))
	}
	writePage(w, r, s, out)
}

func (s *Server) createPolicy(w http.ResponseWriter, r *http.Request) {
	var b policyBody
	if !decode(w, r, &b) || !s.checkPolicy(w, b) {
		return
	}
	p := &policy{ID: s.uuid(), seq: s.seq, Name: b.Name, Decision: b.Decision, Include: b.Include,
		Exclude: b.Exclude, Require: b.Require, CreatedAt: s.now(), UpdatedAt: s.now()}
	s.policies[p.ID] = p
	writeResult(w, http.StatusOK, s.policyJSON(p))
}

func (s *Server) findPolicy(w http.ResponseWriter, r *http.Request) (*policy, bool) {
	p, ok := s.policies[r.PathValue("id")]
	if !ok {
		writeError(w, http.StatusNotFound, 12001, "access.api.error.not_found")
	}
	return p, ok
}

func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request) {
	if p, ok := s.findPolicy(w, r); ok {
		writeResult(w, http.StatusOK, s.policyJSON(p))
	}
}

func (s *Server) updatePolicy(w http.ResponseWriter, r *http.Request) {
	p, ok := s.findPolicy(w, r)
	if !ok {
		return
	}
	var b policyBody
	if !decode(w, r, &b) || !s.checkPolicy(w, b) {
		return
	}
	p.Name, p.Decision, p.Include, p.Exclude, p.Require = b.Name, b.Decision, b.Include, b.Exclude, b.Require
	p.UpdatedAt = s.now()
	writeResult(w, http.StatusOK, s.policyJSON(p))
}

// deletePolicy refuses a policy applications still use (400, code 12003, the fake's own).
func (s *Server) deletePolicy(w http.ResponseWriter, r *http.Request) {
	p, ok := s.findPolicy(w, r)
	if !ok {
		return
	}
	if j := s.policyJSON(p); j.AppCount > 0 {
		writeError(w, http.StatusBadRequest, 12003, "policy is in use by an application")
		return
	}
	delete(s.policies, p.ID)
	writeResult(w, http.StatusOK, map[string]string{"id": p.ID})
}

type app struct {
	seq       uint64
	ID        string
	AUD       string
	Name      string
	Domain    string
	Type      string
	Policies  []string // linked reusable policies, in precedence order
	CreatedAt time.Time
	UpdatedAt time.Time
}

type appJSON struct {
	ID                string       `json:"id"`
	UID               string       `json:"uid"`
	AUD               string       `json:"aud"`
	Name              string       `json:"name"`
	Domain            string       `json:"domain"`
	Type              string       `json:"type"`
	SelfHostedDomains []string     `json:"self_hosted_domains"`
	Destinations      []any        `json:"destinations"`
	Policies          []policyJSON `json:"policies"`
	SessionDuration   string       `json:"session_duration"`
	CreatedAt         time.Time    `json:"created_at"`
	UpdatedAt         time.Time    `json:"updated_at"`
}

func (s *Server) appJSON(a *app) appJSON {
	j := appJSON{ID: a.ID, UID: a.ID, AUD: a.AUD, Name: a.Name, Domain: a.Domain, Type: a.Type,
		SelfHostedDomains: []string{a.Domain},
		Destinations:      []any{map[string]string{"type": "public", "uri": a.Domain}},
		Policies:          []policyJSON{}, SessionDuration: "24h", CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt}
	for i, id := range a.Policies {
		if p := s.policies[id]; p != nil {
			pj := s.policyJSON(p)
			pj.Precedence = i + 1
			j.Policies = append(j.Policies, pj)
		}
	}
	return j
}

// appBody is what a create or an overwrite sends. A policy is linked by id, as an object
// {"id","precedence"} or a bare string.
type appBody struct {
	Name     string            `json:"name"`
	Domain   string            `json:"domain"`
	Type     string            `json:"type"`
	Policies []json.RawMessage `json:"policies"`
}

// checkApp validates an application body and returns its linked policy ids in precedence
// order: a self_hosted type, a hostname domain in the zone and not another application's (409, code 12130,
// the fake's own) and existing policies. Callers hold s.mu.
func (s *Server) checkApp(w http.ResponseWriter, b *appBody, self string) ([]string, bool) {
	b.Domain = strings.ToLower(b.Domain)
	if b.Type != "self_hosted" || !hostnameRE.MatchString(b.Domain) {
		writeError(w, http.StatusBadRequest, 12000, "a self_hosted application with a domain is required")
		return nil, false
	}
	if b.Domain != s.cfg.Zone && !strings.HasSuffix(b.Domain, "."+s.cfg.Zone) {
		writeError(w, http.StatusBadRequest, 12000, "domain: not in a zone of the account")
		return nil, false
	}
	if b.Name == "" {
		b.Name = b.Domain
	}
	for _, a := range s.apps {
		if a.ID != self && a.Domain == b.Domain {
			writeError(w, http.StatusConflict, CodeAppExists, "an application for this domain already exists")
			return nil, false
		}
	}
	type link struct {
		id         string
		precedence int
	}
	var links []link
	for i, raw := range b.Policies {
		var l struct {
			ID         string `json:"id"`
			Precedence int    `json:"precedence"`
		}
		if err := json.Unmarshal(raw, &l.ID); err != nil {
			if err := json.Unmarshal(raw, &l); err != nil {
				writeError(w, http.StatusBadRequest, 12000, "invalid policy link")
				return nil, false
			}
		}
		if s.policies[l.ID] == nil {
			writeError(w, http.StatusBadRequest, 12002, "policies: no such policy")
			return nil, false
		}
		if l.Precedence == 0 {
			l.Precedence = i + 1
		}
		links = append(links, link{l.ID, l.Precedence})
	}
	slices.SortStableFunc(links, func(a, b link) int { return a.precedence - b.precedence })
	ids := make([]string, len(links))
	for i, l := range links {
		ids[i] = l.id
	}
	return ids, true
}

// listApps filters by name and domain (exactly with exact=true, else by substring) and aud.
func (s *Server) listApps(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	exact := q.Get("exact") == "true"
	match := func(v, want string) bool {
		if exact {
			return v == want
		}
		return strings.Contains(v, want)
	}
	var out []appJSON
	for _, a := range sortedByCreation(s.apps, func(a *app) uint64 { return a.seq }) {
		if q.Has("name") && !match(a.Name, q.Get("name")) || q.Has("domain") && !match(a.Domain, q.Get("domain")) ||
			q.Has("aud") && a.AUD != q.Get("aud") {
			continue
		}
		out = append(out, s.appJSON(a))
	}
	writePage(w, r, s, out)
}

func (s *Server) createApp(w http.ResponseWriter, r *http.Request) {
	var b appBody
	if !decode(w, r, &b) {
		return
	}
	ids, ok := s.checkApp(w, &b, "")
	if !ok {
		return
	}
	a := &app{ID: s.uuid(), seq: s.seq, AUD: randomHex(32), Name: b.Name, Domain: b.Domain, Type: b.Type,
		Policies: ids, CreatedAt: s.now(), UpdatedAt: s.now()}
	s.apps[a.ID] = a
	writeResult(w, http.StatusCreated, s.appJSON(a))
}

func (s *Server) findApp(w http.ResponseWriter, r *http.Request) (*app, bool) {
	a, ok := s.apps[r.PathValue("id")]
	if !ok {
		writeError(w, http.StatusNotFound, 12001, "access.api.error.not_found")
	}
	return a, ok
}

func (s *Server) getApp(w http.ResponseWriter, r *http.Request) {
	if a, ok := s.findApp(w, r); ok {
		writeResult(w, http.StatusOK, s.appJSON(a))
	}
}

func (s *Server) updateApp(w http.ResponseWriter, r *http.Request) {
	a, ok := s.findApp(w, r)
	if !ok {
		return
	}
	var b appBody
	if !decode(w, r, &b) {
		return
	}
	ids, ok := s.checkApp(w, &b, a.ID)
	if !ok {
		return
	}
	a.Name, a.Domain, a.Type, a.Policies, a.UpdatedAt = b.Name, b.Domain, b.Type, ids, s.now()
	writeResult(w, http.StatusOK, s.appJSON(a))
}

func (s *Server) deleteApp(w http.ResponseWriter, r *http.Request) {
	if a, ok := s.findApp(w, r); ok {
		delete(s.apps, a.ID)
		writeResult(w, http.StatusAccepted, map[string]string{"id": a.ID})
	}
}
