// Package fakeapi is the machinery the fake cloud APIs (cftest, flytest) share: calls
// counted per route, injected latency, and faults injected per route (server errors, rate
// limits, stalls, before or after the request's work). Each fake answers in its own API's
// shape (Answers); a stalled request ends when its client gives up or the fake closes.
package fakeapi

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"
)

// Route names one endpoint of a fake, as its method and path pattern.
type Route string

// FaultKind is what an injected fault does to a request.
type FaultKind int

// Fault kinds every fake knows.
const (
	// Fail answers Status (default 500) without doing anything.
	Fail FaultKind = iota + 1
	// FailAfter does the request's work (the resource is created or changed), then answers
	// Status (default 500) instead of the result: the client cannot know that it happened.
	// A request the fake refuses anyway gets its own answer.
	FailAfter
	// Stall holds the request, without doing anything, until the client gives up.
	Stall
	// StallAfter does the request's work, then holds the request until the client gives up.
	StallAfter
	// RateLimit answers 429 with a Retry-After header of RetryAfter (whole seconds, rounded
	// up; default 1 s).
	RateLimit
	// Taken answers as a create of a name that is already taken, as the fake's API does.
	// Nothing is created.
	Taken
	// OwnKind is the first kind a fake defines for its own API; Answers.Fault answers it.
	OwnKind
)

// String names the kind, for test names; a fake's own kinds are "fault(N)".
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
	}
	return "fault(" + strconv.Itoa(int(k)) + ")"
}

// Fault is an injected failure of the next requests on one route.
type Fault struct {
	Kind FaultKind
	// Status is the status answered by Fail and FailAfter (default 500), and by Taken and a
	// fake's own kinds (defaults the fake's).
	Status int
	// Code is the API error code answered by Taken and a fake's own kinds, where the fake's
	// API has codes; default the fake's.
	Code int
	// RetryAfter is RateLimit's Retry-After. Default 1 s.
	RetryAfter time.Duration
	// Times is how many requests the fault affects. Default 1; negative: every request
	// until ClearFaults.
	Times int
}

// Answers writes a fake's own answers, in its API's shape.
type Answers interface {
	// Internal answers an injected server error with status.
	Internal(w http.ResponseWriter, status int)
	// RateLimited answers 429; Retry-After is set already.
	RateLimited(w http.ResponseWriter)
	// Fault answers f, of kind Taken or one of the fake's own kinds, on route.
	Fault(route Route, f Fault, w http.ResponseWriter, r *http.Request)
}

// API counts a fake's calls and applies its latency and its injected faults. It is safe for
// concurrent use.
type API struct {
	answers   Answers
	latency   func() time.Duration
	srv       *httptest.Server
	closed    chan struct{}
	closeOnce sync.Once

	mu     sync.Mutex
	faults map[Route][]Fault
	calls  map[Route]int
}

// New returns the API of a fake that answers with answers, each request delayed by latency
// (nil: none).
func New(answers Answers, latency func() time.Duration) *API {
	return &API{answers: answers, latency: latency, closed: make(chan struct{}),
		faults: map[Route][]Fault{}, calls: map[Route]int{}}
}

// Serve starts serving h on a loopback port and returns its base URL. Call it once.
func (a *API) Serve(h http.Handler) string {
	a.srv = httptest.NewServer(h)
	return a.srv.URL
}

// Close ends stalled requests and pauses, then shuts the server down.
func (a *API) Close() {
	a.closeOnce.Do(func() {
		close(a.closed)
		if a.srv != nil {
			a.srv.Close()
		}
	})
}

// Closed is closed once Close was called: long requests of the fake (waits) end then too.
func (a *API) Closed() <-chan struct{} { return a.closed }

// Inject queues f for route. Faults on one route apply in the order injected.
func (a *API) Inject(route Route, f Fault) {
	if f.Times == 0 {
		f.Times = 1
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.faults[route] = append(a.faults[route], f)
}

// ClearFaults drops every queued fault.
func (a *API) ClearFaults() {
	a.mu.Lock()
	defer a.mu.Unlock()
	clear(a.faults)
}

// Calls returns how many requests route has had, faulted ones included.
func (a *API) Calls(route Route) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls[route]
}

// TotalCalls returns how many requests all routes have had.
func (a *API) TotalCalls() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, c := range a.calls {
		n += c
	}
	return n
}

// Wrap counts the call and takes the route's next fault, then lets authorized refuse the
// request (it answers itself and returns false), applies the latency and the fault, and runs h.
func (a *API) Wrap(route Route, authorized func(http.ResponseWriter, *http.Request) bool, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.calls[route]++
		f, faulted := a.takeFault(route)
		a.mu.Unlock()

		if !authorized(w, r) {
			return
		}
		if a.latency != nil && !a.pause(r, a.latency()) {
			return
		}
		if !faulted {
			h(w, r)
			return
		}
		a.apply(route, f, w, r, h)
	}
}

// takeFault returns the route's next fault, using one of its Times. Callers hold a.mu.
func (a *API) takeFault(route Route) (Fault, bool) {
	q := a.faults[route]
	if len(q) == 0 {
		return Fault{}, false
	}
	f := q[0]
	if f.Times > 0 {
		q[0].Times--
		if q[0].Times == 0 {
			a.faults[route] = q[1:]
		}
	}
	return f, true
}

// apply answers r as fault f prescribes, running h when the fault comes after the work.
func (a *API) apply(route Route, f Fault, w http.ResponseWriter, r *http.Request, h http.HandlerFunc) {
	switch f.Kind {
	case Fail:
		a.answers.Internal(w, OrDefault(f.Status, http.StatusInternalServerError))
	case FailAfter, StallAfter:
		rec := httptest.NewRecorder()
		h(rec, r)
		if rec.Code > 299 {
			copyRecorded(w, rec)
			return
		}
		if f.Kind == StallAfter {
			a.stall(r)
			return
		}
		a.answers.Internal(w, OrDefault(f.Status, http.StatusInternalServerError))
	case Stall:
		a.stall(r)
	case RateLimit:
		after := f.RetryAfter
		if after == 0 {
			after = time.Second
		}
		w.Header().Set("Retry-After", strconv.Itoa(int((after+time.Second-1)/time.Second)))
		a.answers.RateLimited(w)
	default:
		a.answers.Fault(route, f, w, r)
	}
}

// pause waits d, or until the client gives up or the fake closes (then false).
func (a *API) pause(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
	case <-a.closed:
	}
	return false
}

// stall holds the request until the client gives up or the fake closes.
func (a *API) stall(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-a.closed:
	}
}

func copyRecorded(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// OrDefault is v, or def when v is zero.
func OrDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}
