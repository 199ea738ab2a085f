package cftest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"time"
)

// Route names one endpoint of the fake, as its method and path pattern.
type Route string

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
type FaultKind int

// Fault kinds.
const (
	// Fail answers Status (default 500) without doing anything.
	Fail FaultKind = iota + 1
	// FailAfter does the request's work (the resource is created or changed), then answers
	// Status (default 500) instead of the result. A request the fake refuses anyway gets
	// its own answer.
	FailAfter
	// Stall holds the request, without doing anything, until the client gives up.
	Stall
	// StallAfter does the request's work, then holds the request until the client gives up.
	StallAfter
	// RateLimit answers 429 (code 971) with a Retry-After header of RetryAfter (whole
	// seconds, rounded up; default 1 s).
	RateLimit
	// Taken answers as a create of a name that is already taken: 409 code 1013 on
	// RouteCreateTunnel, 400 code 81053 on RouteCreateRecord (Code 81057 for "identical
	// record"), 409 code 12130 elsewhere. Nothing is created.
	Taken
	// OtherTunnel answers 400 code 1033: the hostname is already routed to another tunnel.
	OtherTunnel
)

// String names the kind, for test names.
func (k FaultKind) String() string {
	switch k {
	case Fail:
		return "fail"
	case FailAfter:
		return "fail-after"
	case Stall:
		return "stall"
	case StallAfter:
		return "stall-after"
	case RateLimit:
		return "rate-limit"
	case Taken:
		return "taken"
	case OtherTunnel:
		return "other-tunnel"
	}
	return "fault(" + strconv.Itoa(int(k)) + ")"
}

// Fault is an injected failure of the next requests on one route.
type Fault struct {
	Kind FaultKind
	// Status is the status answered by Fail and FailAfter (default 500), Taken and
	// OtherTunnel (defaults above).
	Status int
	// Code is the API error code answered by Taken and OtherTunnel; default above.
	Code int
	// RetryAfter is RateLimit's Retry-After. Default 1 s.
	RetryAfter time.Duration
	// Times is how many requests the fault affects. Default 1; negative: every request
	// until ClearFaults.
	Times int
}

// Inject queues f for route. Faults on one route apply in the order injected.
func (s *Server) Inject(route Route, f Fault) {
	if f.Times == 0 {
		f.Times = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[route] = append(s.faults[route], f)
}

// ClearFaults drops every queued fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.faults)
}

// takeFault returns the route's next fault, using one of its Times. Callers hold s.mu.
func (s *Server) takeFault(route Route) (Fault, bool) {
	q := s.faults[route]
	if len(q) == 0 {
		return Fault{}, false
	}
	f := q[0]
	if f.Times > 0 {
		q[0].Times--
		if q[0].Times == 0 {
			s.faults[route] = q[1:]
		}
	}
	return f, true
}

// apply answers r as fault f prescribes, running h when the fault comes after the work.
func (s *Server) apply(route Route, f Fault, w http.ResponseWriter, r *http.Request, h http.HandlerFunc) {
	switch f.Kind {
	case Fail:
		writeError(w, orDefault(f.Status, http.StatusInternalServerError), 10001, "Internal server error (injected)")
	case FailAfter, StallAfter:
		rec := httptest.NewRecorder()
		h(rec, r)
		if rec.Code > 299 {
			copyRecorded(w, rec)
			return
		}
		if f.Kind == StallAfter {
			s.stall(r)
			return
		}
		writeError(w, orDefault(f.Status, http.StatusInternalServerError), 10001, "Internal server error (injected)")
	case Stall:
		s.stall(r)
	case RateLimit:
		after := f.RetryAfter
		if after == 0 {
			after = time.Second
		}
		secs := int((after + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		writeError(w, http.StatusTooManyRequests, 971, "Please wait and consider throttling your request speed")
	case Taken:
		switch route {
		case RouteCreateTunnel:
			writeError(w, orDefault(f.Status, http.StatusConflict), orDefault(f.Code, CodeTunnelNameTaken), "You already have a tunnel with this name.")
		case RouteCreateRecord, RouteUpdateRecord:
			code := orDefault(f.Code, CodeRecordConflict)
			msg := "An A, AAAA, or CNAME record with that host already exists."
			if code == CodeRecordExists {
				msg = "The record already exists."
			}
			writeError(w, orDefault(f.Status, http.StatusBadRequest), code, msg)
		default:
			writeError(w, orDefault(f.Status, http.StatusConflict), orDefault(f.Code, CodeAppExists), "already exists")
		}
	case OtherTunnel:
		writeError(w, orDefault(f.Status, http.StatusBadRequest), orDefault(f.Code, CodeHostnameOnTunnel),
			"An A, AAAA, or CNAME record with that host already exists and is routed to another tunnel.")
	default:
		writeError(w, http.StatusInternalServerError, 10001, fmt.Sprintf("cftest: unknown fault %v", f.Kind))
	}
}

func copyRecorded(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}
