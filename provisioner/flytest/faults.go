package flytest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"time"
)

// Route names one endpoint of the fake, as its method and path pattern.
type Route string

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
type FaultKind int

// Fault kinds.
const (
	// Fail answers Status (default 500) without doing anything.
	Fail FaultKind = iota + 1
	// FailAfter does the request's work (the resource is created, the machine updated),
	// then answers Status (default 500) instead of the result: the client cannot know that
	// it happened. A request the fake refuses anyway gets its own answer.
	FailAfter
	// Stall holds the request, without doing anything, until the client gives up.
	Stall
	// StallAfter does the request's work, then holds the request until the client gives up.
	StallAfter
	// RateLimit answers 429 with a Retry-After header of RetryAfter (whole seconds,
	// rounded up; default 1 s).
	RateLimit
	// Taken answers Status (default 422) "Name has already been taken", as an app create
	// of a name someone else holds does.
	Taken
	// LeaseHeld answers 409 as a lease acquire does while another holder has the lease.
	LeaseHeld
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
	case LeaseHeld:
		return "lease-held"
	}
	return "fault(" + strconv.Itoa(int(k)) + ")"
}

// Fault is an injected failure of the next requests on one route.
type Fault struct {
	Kind FaultKind
	// Status is the status answered by Fail, FailAfter and Taken. Default 500 (422 for
	// Taken).
	Status int
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
func (s *Server) apply(f Fault, w http.ResponseWriter, r *http.Request, h http.HandlerFunc) {
	switch f.Kind {
	case Fail:
		writeError(w, orDefault(f.Status, http.StatusInternalServerError), "internal error (injected)")
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
		writeError(w, orDefault(f.Status, http.StatusInternalServerError), "internal error (injected)")
	case Stall:
		s.stall(r)
	case RateLimit:
		after := f.RetryAfter
		if after == 0 {
			after = time.Second
		}
		secs := int((after + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		writeError(w, http.StatusTooManyRequests, "rate limit exceeded")
	case Taken:
		status := orDefault(f.Status, http.StatusUnprocessableEntity)
		msg := "Name has already been taken"
		if status == http.StatusUnauthorized || status == http.StatusForbidden {
			msg = "unauthorized"
		}
		writeError(w, status, msg)
	case LeaseHeld:
		s.mu.Lock()
		expires := s.now().Add(time.Minute)
		s.mu.Unlock()
		writeLeaseHeld(w, "other@example.test", expires)
	default:
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("flytest: unknown fault %v", f.Kind))
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
