package flytest

import (
	"net/http"
	"time"

	"github.com/moltgate/moltgate/provisioner/internal/fakeapi"
)

// Route names one endpoint of the fake, as its method and path pattern.
type Route = fakeapi.Route

// The routes the fake serves: those fly-go v0.5.0's flaps client calls for apps, volumes,
// IP assignments, secrets, machines and leases.
const (
	RouteListApps  Route = "GET /v1/apps"
	RouteCreateApp Route = "POST /v1/apps"
	RouteGetApp    Route = "GET /v1/apps/{app}"
	RouteDeleteApp Route = "DELETE /v1/apps/{app}"

	RouteListVolumes  Route = "GET /v1/apps/{app}/volumes"
	RouteCreateVolume Route = "POST /v1/apps/{app}/volumes"
	RouteGetVolume    Route = "GET /v1/apps/{app}/volumes/{vol}"
	RouteDeleteVolume Route = "DELETE /v1/apps/{app}/volumes/{vol}"

	RouteListIPs  Route = "GET /v1/apps/{app}/ip_assignments"
	RouteAssignIP Route = "POST /v1/apps/{app}/ip_assignments"
	RouteDeleteIP Route = "DELETE /v1/apps/{app}/ip_assignments/{ip}"

	RouteListSecrets   Route = "GET /v1/apps/{app}/secrets"
	RouteUpdateSecrets Route = "POST /v1/apps/{app}/secrets"
	RouteGetSecret     Route = "GET /v1/apps/{app}/secrets/{name}"
	RouteSetSecret     Route = "POST /v1/apps/{app}/secrets/{name}"
	RouteDeleteSecret  Route = "DELETE /v1/apps/{app}/secrets/{name}"

	RouteListMachines   Route = "GET /v1/apps/{app}/machines"
	RouteLaunch         Route = "POST /v1/apps/{app}/machines"
	RouteGetMachine     Route = "GET /v1/apps/{app}/machines/{id}"
	RouteUpdateMachine  Route = "POST /v1/apps/{app}/machines/{id}"
	RouteStartMachine   Route = "POST /v1/apps/{app}/machines/{id}/start"
	RouteStopMachine    Route = "POST /v1/apps/{app}/machines/{id}/stop"
	RouteDestroyMachine Route = "DELETE /v1/apps/{app}/machines/{id}"
	RouteWait           Route = "GET /v1/apps/{app}/machines/{id}/wait"
	RouteGetLease       Route = "GET /v1/apps/{app}/machines/{id}/lease"
	RouteAcquireLease   Route = "POST /v1/apps/{app}/machines/{id}/lease"
	RouteReleaseLease   Route = "DELETE /v1/apps/{app}/machines/{id}/lease"
)

// FaultKind is what an injected fault does to a request.
type FaultKind = fakeapi.FaultKind

// Fault kinds: fakeapi's (Fail, FailAfter, Stall, StallAfter, RateLimit), and these. Taken
// answers Status (default 422) "Name has already been taken", as an app create of a name
// someone else holds does. LeaseHeld answers 409 as a lease acquire does while another
// holder has the lease.
const (
	Fail, FailAfter, Stall, StallAfter, RateLimit = fakeapi.Fail, fakeapi.FailAfter, fakeapi.Stall, fakeapi.StallAfter, fakeapi.RateLimit
	Taken, LeaseHeld                              = fakeapi.Taken, fakeapi.OwnKind
)

// Fault is an injected failure of the next requests on one route: Status is the status
// answered by Fail, FailAfter and Taken (default 500, 422 for Taken); Code is not used.
type Fault = fakeapi.Fault

// Inject queues f for route. Faults on one route apply in the order injected.
func (s *Server) Inject(route Route, f Fault) { s.api.Inject(route, f) }

// ClearFaults drops every queued fault.
func (s *Server) ClearFaults() { s.api.ClearFaults() }

// answers are the fake's answers to injected faults, in the Machines API's error shape.
type answers struct{ s *Server }

func (answers) Internal(w http.ResponseWriter, status int) {
	writeError(w, status, "internal error (injected)")
}

func (answers) RateLimited(w http.ResponseWriter) {
	writeError(w, http.StatusTooManyRequests, "rate limit exceeded")
}

func (a answers) Fault(_ Route, f Fault, w http.ResponseWriter, _ *http.Request) {
	switch f.Kind {
	case Taken:
		status := fakeapi.OrDefault(f.Status, http.StatusUnprocessableEntity)
		msg := "Name has already been taken"
		if status == http.StatusUnauthorized || status == http.StatusForbidden {
			msg = "unauthorized"
		}
		writeError(w, status, msg)
	case LeaseHeld:
		a.s.mu.Lock()
		expires := a.s.now().Add(time.Minute)
		a.s.mu.Unlock()
		writeLeaseHeld(w, "other@example.test", expires)
	default:
		writeError(w, http.StatusInternalServerError, "flytest: unknown fault "+f.Kind.String())
	}
}
