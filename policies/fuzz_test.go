package policies

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/moltgate/moltgate/registry"
)

// FuzzDecide feeds the engine hostile inputs over the decision table's data and checks the
// properties every default policy must keep, whatever the input: nothing panics, an error
// never comes with an allow, and no allow on proxy traffic (HTTP or WebSocket) reaches a
// gateway for an anonymous caller, a stranger, another gateway's token, an unknown gateway or
// an address outside the gateway's allowlist.
//
//	go test -run '^$' -fuzz '^FuzzDecide$' -fuzztime 30s ./policies/
func FuzzDecide(f *testing.F) {
	t := loadTable(f)
	for _, c := range t.Cases {
		in := c.Input
		var fva0, fva1 int
		if len(in.Subject.FactorAges) == 2 {
			fva0, fva1 = in.Subject.FactorAges[0], in.Subject.FactorAges[1]
		}
		ws := ""
		if in.WS != nil {
			ws = in.WS.Method
		}
		f.Add(in.Subject.Kind, in.Subject.ID, in.Subject.Gateway, in.Gateway.ID, in.Protocol, in.Action,
			in.ClientIP, in.Request.Method, in.Request.Path, in.Request.Tool, ws, fva0, fva1)
	}
	e := newTestEngine(f, Config{}, &t)
	gateways := map[string]registry.Gateway{}
	for _, g := range t.Gateways {
		gateways[g.ID] = g
	}
	f.Fuzz(func(t *testing.T, kind, id, tokenGateway, gateway, protocol, action, ip, method, path, tool, wsMethod string, fva0, fva1 int) {
		in := Input{
			Subject:  Subject{Kind: kind, ID: id, Gateway: tokenGateway, FactorAges: []int{fva0, fva1}},
			Gateway:  GatewayRef{ID: gateway},
			Request:  Request{Method: method, Path: path, Host: gateway + ".gw.localhost", Tool: tool},
			ClientIP: ip,
			Protocol: protocol,
			Action:   action,
		}
		if wsMethod != "" {
			in.WS = &WSMessage{Method: wsMethod}
		}
		d, err := e.Decide(context.Background(), &in)
		if err != nil {
			if d.Allow {
				t.Fatalf("error %v came with an allow", err)
			}
			return
		}
		if !d.Allow || (protocol != ProtocolHTTP && protocol != ProtocolWS) {
			return
		}
		g, known := gateways[gateway]
		switch {
		case !known:
			t.Fatalf("allowed on unknown gateway %q: %+v", gateway, in)
		case kind != SubjectUser && kind != SubjectGatewayToken:
			t.Fatalf("allowed a %q subject on a gateway: %+v", kind, in)
		case kind == SubjectUser && (id == "" || id != g.Owner && g.Members[id] == ""):
			t.Fatalf("allowed user %q, neither owner nor member of %s: %+v", id, gateway, in)
		case kind == SubjectGatewayToken && tokenGateway != gateway:
			t.Fatalf("allowed a token of %q on %q: %+v", tokenGateway, gateway, in)
		case len(g.Allowlist) > 0 && !inAllowlist(g.Allowlist, ip):
			t.Fatalf("allowed %q outside the allowlist %v of %s: %+v", ip, g.Allowlist, gateway, in)
		case action == "tools.invoke" && slices.Contains(g.Skills.Deny, tool):
			t.Fatalf("allowed denied tool %q on %s: %+v", tool, gateway, in)
		}
	})
}

// inAllowlist is an independent check of an address against allowlist entries (CIDRs or
// bare addresses; anything else matches nothing).
func inAllowlist(list []string, ip string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	a = a.Unmap().WithZone("")
	for _, e := range list {
		if p, err := netip.ParsePrefix(e); err == nil && p.Contains(a) {
			return true
		}
		if b, err := netip.ParseAddr(e); err == nil && b == a {
			return true
		}
	}
	return false
}
