package policies

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/moltgate/moltgate/registry"
)

// codec converts Input to an OPA value and a result back to a Decision without going
// through JSON or reflection: on the hot path that conversion costs more than the policy.
// Its key terms are built once and only read afterwards, so one codec serves concurrent
// decisions.
type codec struct {
	subject, gateway, request, clientIP, protocol, action, ws *ast.Term
	kind, id, sessionID, orgID, orgRole, factorAges           *ast.Term
	tenant, method, path, route, host, tool, skill, country   *ast.Term
	allow, reason, status, scopes, missingScope               *ast.Term
	emptyIP                                                   *ast.Term
}

func newCodec() *codec {
	s := str
	return &codec{
		subject: s("subject"), gateway: s("gateway"), request: s("request"), clientIP: s("client_ip"),
		protocol: s("protocol"), action: s("action"), ws: s("ws"),
		kind: s("kind"), id: s("id"), sessionID: s("session_id"), orgID: s("org_id"), orgRole: s("org_role"),
		factorAges: s("factor_ages"),
		tenant:     s("tenant"), method: s("method"), path: s("path"), route: s("route"), host: s("host"), tool: s("tool"), skill: s("skill"),
		country: s("country"),
		allow:   s("allow"), reason: s("reason"), status: s("status"), scopes: s("scopes"),
		missingScope: s("missing_scope"),
		emptyIP:      s(""),
	}
}

// str returns a term for s: the shared one when s is in the vocabulary, else OPA's interned
// term where one exists, else a new one.
func str(s string) *ast.Term {
	if t, ok := vocab[s]; ok {
		return t
	}
	return ast.InternedTerm(s) // OPA's own table of common strings, else a new term
}

// vocab holds one term for each string that recurs in inputs and gateway records: keys,
// subject kinds, protocols, HTTP methods, roles, auth modes, and every string in the
// embedded roles.json, ws.json and http.json (actions, WebSocket methods, paths). Terms are never changed once
// built, so sharing them is safe. Sharing spares a decision a dozen allocations, and the
// 10,000-gateway document tens of thousands of objects the garbage collector must mark.
var vocab = func() map[string]*ast.Term {
	words := []string{
		"subject", "gateway", "request", "client_ip", "protocol", "action", "ws",
		"kind", "id", "session_id", "org_id", "org_role", "factor_ages", "gateway",
		"tenant", "method", "path", "route", "host", "tool", "skill",
		"owner", "auth_mode", "members", "api_tokens", "role", "allowlist", "skills", "allow", "deny",
		SubjectUser, SubjectGatewayToken, SubjectAPIToken, SubjectAdminToken, ProtocolHTTP, ProtocolWS, ProtocolAdmin,
		"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
		registry.RoleViewer, registry.RoleOperator, registry.RoleAdmin,
		string(registry.AuthToken), string(registry.AuthTrustedProxy),
	}
	for _, name := range []string{"roles.json", "ws.json", "http.json"} {
		data, err := defaultSet.ReadFile(name)
		if err != nil {
			panic(err)
		}
		var doc any
		if err := json.Unmarshal(data, &doc); err != nil {
			panic(fmt.Sprintf("policies: %s: %v", name, err))
		}
		words = appendStrings(words, doc)
	}
	v := make(map[string]*ast.Term, len(words))
	for _, w := range words {
		v[w] = ast.StringTerm(w)
	}
	return v
}()

// appendStrings appends every string and object key in a decoded JSON document.
func appendStrings(words []string, doc any) []string {
	switch d := doc.(type) {
	case string:
		words = append(words, d)
	case []any:
		for _, e := range d {
			words = appendStrings(words, e)
		}
	case map[string]any:
		for k, e := range d {
			words = appendStrings(append(words, k), e)
		}
	}
	return words
}

// input builds the policy input. Fields tagged omitempty in Input are left out when empty,
// exactly as the JSON encoding of Input would, so policies see the same document either way,
// except that tool and skill names are given as CanonicalName returns them.
func (c *codec) input(in *Input) ast.Value {
	subj := make([][2]*ast.Term, 0, 8)
	subj = append(subj, [2]*ast.Term{c.kind, str(in.Subject.Kind)}, [2]*ast.Term{c.id, str(in.Subject.ID)})
	if in.Subject.SessionID != "" {
		subj = append(subj, [2]*ast.Term{c.sessionID, str(in.Subject.SessionID)})
	}
	if in.Subject.OrgID != "" {
		subj = append(subj, [2]*ast.Term{c.orgID, str(in.Subject.OrgID)})
	}
	if in.Subject.OrgRole != "" {
		subj = append(subj, [2]*ast.Term{c.orgRole, str(in.Subject.OrgRole)})
	}
	if len(in.Subject.FactorAges) > 0 {
		ages := make([]*ast.Term, len(in.Subject.FactorAges))
		for i, a := range in.Subject.FactorAges {
			ages[i] = ast.InternedTerm(a)
		}
		subj = append(subj, [2]*ast.Term{c.factorAges, ast.ArrayTerm(ages...)})
	}
	if in.Subject.Gateway != "" {
		subj = append(subj, [2]*ast.Term{c.gateway, str(in.Subject.Gateway)})
	}

	gw := [][2]*ast.Term{{c.id, str(in.Gateway.ID)}}
	if in.Gateway.Tenant != "" {
		gw = append(gw, [2]*ast.Term{c.tenant, str(in.Gateway.Tenant)})
	}

	req := make([][2]*ast.Term, 3, 6)
	path := str(in.Request.Path)
	req[0] = [2]*ast.Term{c.method, str(in.Request.Method)}
	req[1] = [2]*ast.Term{c.path, path}
	req[2] = [2]*ast.Term{c.host, str(in.Request.Host)}
	switch in.Request.Route {
	case "":
	case in.Request.Path: // most requests: one term for both
		req = append(req, [2]*ast.Term{c.route, path})
	default:
		req = append(req, [2]*ast.Term{c.route, str(in.Request.Route)})
	}
	if tool := CanonicalName(in.Request.Tool); tool != "" {
		req = append(req, [2]*ast.Term{c.tool, str(tool)})
	}
	if in.Request.Country != "" {
		req = append(req, [2]*ast.Term{c.country, str(in.Request.Country)})
	}

	top := make([][2]*ast.Term, 6, 7)
	top[0] = [2]*ast.Term{c.subject, ast.NewTerm(ast.NewObject(subj...))}
	top[1] = [2]*ast.Term{c.gateway, ast.NewTerm(ast.NewObject(gw...))}
	top[2] = [2]*ast.Term{c.request, ast.NewTerm(ast.NewObject(req...))}
	top[3] = [2]*ast.Term{c.clientIP, c.ip(in.ClientIP)}
	top[4] = [2]*ast.Term{c.protocol, str(in.Protocol)}
	top[5] = [2]*ast.Term{c.action, str(in.Action)}
	if in.WS != nil {
		ws := [][2]*ast.Term{{c.method, str(in.WS.Method)}}
		if tool := CanonicalName(in.WS.Tool); tool != "" {
			ws = append(ws, [2]*ast.Term{c.tool, str(tool)})
		}
		if skill := CanonicalName(in.WS.Skill); skill != "" {
			ws = append(ws, [2]*ast.Term{c.skill, str(skill)})
		}
		if in.WS.Channels != nil {
			// Rare (configuration writes only): no interned terms.
			if v, err := ast.InterfaceToValue(in.WS.Channels); err == nil {
				ws = append(ws, [2]*ast.Term{ast.StringTerm("channels"), ast.NewTerm(v)})
			} else {
				ws = append(ws, [2]*ast.Term{ast.StringTerm("config_unreadable"), ast.BooleanTerm(true)})
			}
		}
		if in.WS.ConfigUnreadable {
			ws = append(ws, [2]*ast.Term{ast.StringTerm("config_unreadable"), ast.BooleanTerm(true)})
		}
		top = append(top, [2]*ast.Term{c.ws, ast.NewTerm(ast.NewObject(ws...))})
	}
	return ast.NewObject(top...)
}

// ip returns client_ip as policies see it: a valid address in canonical form, or "" when
// the proxy could not tell one. An IPv4-mapped IPv6 address is unmapped so that it matches
// IPv4 allowlist entries, and a zone is dropped.
func (c *codec) ip(s string) *ast.Term {
	if s == "" {
		return c.emptyIP
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return c.emptyIP
	}
	if a.Is4In6() || a.Zone() != "" {
		return ast.StringTerm(a.Unmap().WithZone("").String())
	}
	return ast.StringTerm(s)
}

var errNotObject = errors.New("decision is not an object")

// decision converts the policy result. Anything but an object whose allow is a boolean,
// whose reason and missing_scope (if present) are strings, whose status (if present) is an integer and whose
// scopes (if present) is an array of strings is an error.
func (c *codec) decision(t *ast.Term) (Decision, error) {
	obj, ok := t.Value.(ast.Object)
	if !ok {
		return Decision{}, fmt.Errorf("%w: %s", errNotObject, ast.ValueName(t.Value))
	}
	var d Decision
	allow, ok := termValue[ast.Boolean](obj.Get(c.allow))
	if !ok {
		return Decision{}, errors.New("decision.allow is not a boolean")
	}
	d.Allow = bool(allow)
	if rt := obj.Get(c.reason); rt != nil {
		r, ok := rt.Value.(ast.String)
		if !ok {
			return Decision{}, errors.New("decision.reason is not a string")
		}
		d.Reason = string(r)
	}
	if mt := obj.Get(c.missingScope); mt != nil {
		m, ok := mt.Value.(ast.String)
		if !ok {
			return Decision{}, errors.New("decision.missing_scope is not a string")
		}
		d.MissingScope = string(m)
	}
	if st := obj.Get(c.status); st != nil {
		n, ok := st.Value.(ast.Number)
		if !ok {
			return Decision{}, errors.New("decision.status is not a number")
		}
		i, ok := n.Int()
		if !ok || i < 0 || i > 999 {
			return Decision{}, fmt.Errorf("decision.status %v is not an HTTP status", n)
		}
		d.Status = i
	}
	if sc := obj.Get(c.scopes); sc != nil {
		arr, ok := sc.Value.(*ast.Array)
		if !ok {
			return Decision{}, errors.New("decision.scopes is not an array")
		}
		if arr.Len() > 0 {
			d.Scopes = make([]string, arr.Len())
			for i := range arr.Len() {
				s, ok := arr.Elem(i).Value.(ast.String)
				if !ok {
					return Decision{}, errors.New("decision.scopes holds a non-string")
				}
				d.Scopes[i] = string(s)
			}
		}
	}
	return d, nil
}

func termValue[T ast.Value](t *ast.Term) (T, bool) {
	var zero T
	if t == nil {
		return zero, false
	}
	v, ok := t.Value.(T)
	return v, ok
}
