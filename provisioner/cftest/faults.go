package cftest

import (
	"net/http"

	"github.com/moltgate/moltgate/provisioner/internal/fakeapi"
)

// Route names one endpoint of the fake, as its method and path pattern.
type Route = fakeapi.Route

// The routes the fake serves: those cloudflare-go v7.9.0 calls for Cloudflare Tunnel
// (zero_trust.TunnelCloudflared*), DNS records (dns.RecordService) and Access service tokens,
// policies and applications (zero_trust.Access*), account-scoped for Access.
const (
	RouteListTunnels     Route = "GET /client/v4/accounts/{acc}/cfd_tunnel"
	RouteCreateTunnel    Route = "POST /client/v4/accounts/{acc}/cfd_tunnel"
	RouteGetTunnel       Route = "GET /client/v4/accounts/{acc}/cfd_tunnel/{id}"
	RouteDeleteTunnel    Route = "DELETE /client/v4/accounts/{acc}/cfd_tunnel/{id}"
	RouteGetTunnelConfig Route = "GET /client/v4/accounts/{acc}/cfd_tunnel/{id}/configurations"
	RoutePutTunnelConfig Route = "PUT /client/v4/accounts/{acc}/cfd_tunnel/{id}/configurations"
	RouteGetTunnelToken  Route = "GET /client/v4/accounts/{acc}/cfd_tunnel/{id}/token"

	RouteListRecords  Route = "GET /client/v4/zones/{zone}/dns_records"
	RouteCreateRecord Route = "POST /client/v4/zones/{zone}/dns_records"
	RouteGetRecord    Route = "GET /client/v4/zones/{zone}/dns_records/{id}"
	RouteUpdateRecord Route = "PUT /client/v4/zones/{zone}/dns_records/{id}"
	RouteDeleteRecord Route = "DELETE /client/v4/zones/{zone}/dns_records/{id}"

	RouteListServiceTokens  Route = "GET /client/v4/accounts/{acc}/access/service_tokens"
	RouteCreateServiceToken Route = "POST /client/v4/accounts/{acc}/access/service_tokens"
	RouteGetServiceToken    Route = "GET /client/v4/accounts/{acc}/access/service_tokens/{id}"
	RouteDeleteServiceToken Route = "DELETE /client/v4/accounts/{acc}/access/service_tokens/{id}"

	RouteListPolicies Route = "GET /client/v4/accounts/{acc}/access/policies"
	RouteCreatePolicy Route = "POST /client/v4/accounts/{acc}/access/policies"
	RouteGetPolicy    Route = "GET /client/v4/accounts/{acc}/access/policies/{id}"
	RouteUpdatePolicy Route = "PUT /client/v4/accounts/{acc}/access/policies/{id}"
	RouteDeletePolicy Route = "DELETE /client/v4/accounts/{acc}/access/policies/{id}"

	RouteListApps  Route = "GET /client/v4/accounts/{acc}/access/apps"
	RouteCreateApp Route = "POST /client/v4/accounts/{acc}/access/apps"
	RouteGetApp    Route = "GET /client/v4/accounts/{acc}/access/apps/{id}"
	RouteUpdateApp Route = "PUT /client/v4/accounts/{acc}/access/apps/{id}"
	RouteDeleteApp Route = "DELETE /client/v4/accounts/{acc}/access/apps/{id}"
)

// API error codes the fake answers with (and the driver reacts to).
const (
	CodeTunnelNameTaken  = 1013  // a live tunnel of that name exists
	CodeHostnameOnTunnel = 1033  // the hostname is routed to another tunnel
	CodeRecordConflict   = 81053 // an A, AAAA or CNAME record with that host already exists
	CodeRecordExists     = 81057 // an identical record already exists
	CodeAppExists        = 12130 // fake's own: an Access application for that domain exists
	CodeNotFound         = 1003  // fake's own where the real code is unknown
)

// FaultKind is what an injected fault does to a request.
type FaultKind = fakeapi.FaultKind

// Fault kinds: fakeapi's (Fail, FailAfter, Stall, StallAfter, RateLimit), and these. Taken
// answers as a create of a name that is already taken: 409 code 1013 on RouteCreateTunnel,
// 400 code 81053 on RouteCreateRecord (Code 81057 for "identical record"), 409 code 12130
// elsewhere; nothing is created. RateLimit answers code 971. OtherTunnel answers 400 code
// 1033: the hostname is already routed to another tunnel.
const (
	Fail, FailAfter, Stall, StallAfter, RateLimit = fakeapi.Fail, fakeapi.FailAfter, fakeapi.Stall, fakeapi.StallAfter, fakeapi.RateLimit
	Taken, OtherTunnel                            = fakeapi.Taken, fakeapi.OwnKind
)

// Fault is an injected failure of the next requests on one route: Status is the status
// answered by Fail and FailAfter (default 500), Taken and OtherTunnel (defaults above); Code
// the API error code answered by Taken and OtherTunnel (defaults above).
type Fault = fakeapi.Fault

// Inject queues f for route. Faults on one route apply in the order injected.
func (s *Server) Inject(route Route, f Fault) { s.api.Inject(route, f) }

// ClearFaults drops every queued fault.
func (s *Server) ClearFaults() { s.api.ClearFaults() }

// answers are the fake's answers to injected faults, in the v4 envelope.
type answers struct{}

func (answers) Internal(w http.ResponseWriter, status int) {
	writeError(w, status, 10001, "Internal server error (injected)")
}

func (answers) RateLimited(w http.ResponseWriter) {
	writeError(w, http.StatusTooManyRequests, 971, "Please wait and consider throttling your request speed")
}

func (answers) Fault(route Route, f Fault, w http.ResponseWriter, _ *http.Request) {
	switch f.Kind {
	case Taken:
		switch route {
		case RouteCreateTunnel:
			writeError(w, fakeapi.OrDefault(f.Status, http.StatusConflict), fakeapi.OrDefault(f.Code, CodeTunnelNameTaken), "You already have a tunnel with this name.")
		case RouteCreateRecord, RouteUpdateRecord:
			code := fakeapi.OrDefault(f.Code, CodeRecordConflict)
			msg := "An A, AAAA, or CNAME record with that host already exists."
			if code == CodeRecordExists {
				msg = "The record already exists."
			}
			writeError(w, fakeapi.OrDefault(f.Status, http.StatusBadRequest), code, msg)
		default:
			writeError(w, fakeapi.OrDefault(f.Status, http.StatusConflict), fakeapi.OrDefault(f.Code, CodeAppExists), "already exists")
		}
	case OtherTunnel:
		writeError(w, fakeapi.OrDefault(f.Status, http.StatusBadRequest), fakeapi.OrDefault(f.Code, CodeHostnameOnTunnel),
			"An A, AAAA, or CNAME record with that host already exists and is routed to another tunnel.")
	default:
		writeError(w, http.StatusInternalServerError, 10001, "cftest: unknown fault "+f.Kind.String())
	}
}
