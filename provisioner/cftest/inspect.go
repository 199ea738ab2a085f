package cftest

import (
	"encoding/json"
	"slices"
	"time"
)

// Counts is how many live resources the fake holds.
type Counts struct {
	Tunnels       int // not deleted
	Records       int
	ServiceTokens int
	Policies      int
	Apps          int
}

// Counts returns how many live resources of each kind exist.
func (s *Server) Counts() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := Counts{Records: len(s.records), ServiceTokens: len(s.tokens), Policies: len(s.policies), Apps: len(s.apps)}
	for _, t := range s.tunnels {
		if t.DeletedAt.IsZero() {
			c.Tunnels++
		}
	}
	return c
}

// Calls returns how many requests route has had, faulted ones included.
func (s *Server) Calls(route Route) int { return s.api.Calls(route) }

// TotalCalls returns how many requests all routes have had.
func (s *Server) TotalCalls() int { return s.api.TotalCalls() }

// Tunnel is a tunnel as the fake holds it.
type Tunnel struct {
	ID        string
	Name      string
	ConfigSrc string
	Deleted   bool
	// Ingress is the tunnel's configuration; nil until one is put.
	Ingress []IngressRule
	// ConfigVersion counts configuration puts.
	ConfigVersion int
}

// Tunnels returns every tunnel, deleted ones included, oldest first.
func (s *Server) Tunnels() []Tunnel {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Tunnel
	for _, t := range sortedByCreation(s.tunnels, func(t *tunnel) uint64 { return t.seq }) {
		v := Tunnel{ID: t.ID, Name: t.Name, ConfigSrc: t.ConfigSrc, Deleted: !t.DeletedAt.IsZero(), ConfigVersion: t.version}
		if t.config != nil {
			v.Ingress = slices.Clone(t.config.Ingress)
		}
		out = append(out, v)
	}
	return out
}

// TunnelToken returns the connector token of tunnel id, as its token route answers it, or
// "" for an unknown tunnel.
func (s *Server) TunnelToken(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tunnels[id]
	if !ok {
		return ""
	}
	return tunnelToken(s.cfg.AccountID, t)
}

// Record is a DNS record as the fake holds it.
type Record struct {
	ID      string
	Name    string
	Type    string
	Content string
	Proxied bool
	TTL     float64
	Comment string
}

// Records returns every DNS record, oldest first.
func (s *Server) Records() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Record
	for _, r := range sortedByCreation(s.records, func(r *record) uint64 { return r.seq }) {
		out = append(out, Record{ID: r.ID, Name: r.Name, Type: r.Type, Content: r.Content, Proxied: r.Proxied, TTL: r.TTL, Comment: r.Comment})
	}
	return out
}

// ServiceToken is an Access service token as the fake holds it, its secret included.
type ServiceToken struct {
	ID           string
	Name         string
	ClientID     string
	ClientSecret string
	ExpiresAt    time.Time
}

// ServiceTokens returns every service token, oldest first.
func (s *Server) ServiceTokens() []ServiceToken {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ServiceToken
	for _, t := range sortedByCreation(s.tokens, func(t *serviceToken) uint64 { return t.seq }) {
		out = append(out, ServiceToken{ID: t.ID, Name: t.Name, ClientID: t.ClientID, ClientSecret: t.secret, ExpiresAt: t.ExpiresAt})
	}
	return out
}

// Policy is a reusable Access policy as the fake holds it.
type Policy struct {
	ID       string
	Name     string
	Decision string
	// ServiceTokens are the token ids of its include rules of type service_token.
	ServiceTokens []string
	// OtherIncludes counts its include rules of any other type.
	OtherIncludes int
	// Excludes and Requires count its exclude and require rules.
	Excludes, Requires int
}

// Policies returns every Access policy, oldest first.
func (s *Server) Policies() []Policy {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Policy
	for _, p := range sortedByCreation(s.policies, func(p *policy) uint64 { return p.seq }) {
		v := Policy{ID: p.ID, Name: p.Name, Decision: p.Decision, Excludes: len(p.Exclude), Requires: len(p.Require)}
		for _, raw := range p.Include {
			var rule struct {
				ServiceToken *struct {
					TokenID string `json:"token_id"`
				} `json:"service_token"`
			}
			if json.Unmarshal(raw, &rule) == nil && rule.ServiceToken != nil {
				v.ServiceTokens = append(v.ServiceTokens, rule.ServiceToken.TokenID)
			} else {
				v.OtherIncludes++
			}
		}
		out = append(out, v)
	}
	return out
}

// App is an Access application as the fake holds it.
type App struct {
	ID       string
	AUD      string
	Name     string
	Domain   string
	Type     string
	Policies []string // linked policy ids in precedence order
}

// Apps returns every Access application, oldest first.
func (s *Server) Apps() []App {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []App
	for _, a := range sortedByCreation(s.apps, func(a *app) uint64 { return a.seq }) {
		out = append(out, App{ID: a.ID, AUD: a.AUD, Name: a.Name, Domain: a.Domain, Type: a.Type, Policies: slices.Clone(a.Policies)})
	}
	return out
}
