package flytest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/moltgate/moltgate/provisioner/internal/fakeapi"
)

// Config sets up a Server. The zero value is a working fake for organization "moltgate"
// that checks no token.
type Config struct {
	// Org is the slug of the organization the caller's token belongs to: its apps are the
	// caller's, every other organization's are not. Default "moltgate".
	Org string
	// Token, when set, must be presented on every request as "Authorization: Bearer <Token>"
	// or "FlyV1 <Token>"; other requests get 401. Default: no check.
	Token string
	// Owner is the lease owner reported for leases the caller takes. Default
	// "moltgate@example.test".
	Owner string
	// StepDelay is how long each transient machine state (starting, stopping, destroying)
	// lasts on the server's clock. Default 0: the state a request sets is seen in its
	// response, the resting state by the next request.
	StepDelay time.Duration
	// MaxWait bounds the wait endpoint: it answers 408 after min(timeout, MaxWait), the
	// timeout clamped to [1 s, 60 s] as Fly does. Default 60 s.
	MaxWait time.Duration
	// LeaseTTL is the TTL of a lease requested without one. Default 30 s.
	LeaseTTL time.Duration
	// ForeignStatus is the status of a call (other than create) on an app another
	// organization holds: 401 or 403. Default 401, body {"error":"unauthorized"}.
	ForeignStatus int
	// Latency, when set, is called once per request and the request waits that long before
	// it is handled (benches inject 100–800 ms with UniformLatency). Default none.
	Latency func() time.Duration
	// Now is the server's clock, for lease expiry and machine state steps; Advance shifts
	// it. Default time.Now.
	Now func() time.Time
}

// Server is a running fake of the Machines API. Its methods are safe for concurrent use.
type Server struct {
	// URL is the base URL of the fake, for example http://127.0.0.1:PORT (no trailing /v1).
	URL string

	cfg Config
	api *fakeapi.API // the server, its calls, latency and faults

	mu         sync.Mutex
	changed    chan struct{} // closed and replaced on every state change: wakes waiters
	offset     time.Duration // added to cfg.Now by Advance
	seq        uint64
	apps       map[string]*app
	bootHold   bool
	failImages map[string]bool
	failChecks map[checkFault]bool // FailChecks
}

// New starts a fake on a loopback port. Close it when done.
func New(cfg Config) (*Server, error) {
	if cfg.Org == "" {
		cfg.Org = "moltgate"
	}
	if cfg.Owner == "" {
		cfg.Owner = "moltgate@example.test"
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = 60 * time.Second
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 30 * time.Second
	}
	if cfg.ForeignStatus == 0 {
		cfg.ForeignStatus = http.StatusUnauthorized
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var errs []error
	if cfg.ForeignStatus != http.StatusUnauthorized && cfg.ForeignStatus != http.StatusForbidden {
		errs = append(errs, fmt.Errorf("foreign_status: %d, want 401 or 403", cfg.ForeignStatus))
	}
	if cfg.StepDelay < 0 || cfg.MaxWait < 0 || cfg.LeaseTTL < 0 {
		errs = append(errs, errors.New("step_delay, max_wait, lease_ttl: must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("flytest: config: %w", err)
	}
	s := &Server{
		cfg:        cfg,
		changed:    make(chan struct{}),
		apps:       map[string]*app{},
		failImages: map[string]bool{},
	}
	s.api = fakeapi.New(answers{s}, cfg.Latency)
	s.URL = s.api.Serve(s.routes())
	return s, nil
}

// Close ends stalled requests and shuts the server down.
func (s *Server) Close() { s.api.Close() }

// Transport returns a RoundTripper that sends every request to this fake whatever its
// host, keeping the path: give it to flaps.NewClientOpts.Transport.
func (s *Server) Transport() http.RoundTripper {
	base, _ := url.Parse(s.URL)
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		r := req.Clone(req.Context())
		r.URL.Scheme, r.URL.Host, r.Host = base.Scheme, base.Host, ""
		return http.DefaultTransport.RoundTrip(r)
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	for route, h := range map[Route]http.HandlerFunc{
		RouteListApps:  s.listApps,
		RouteCreateApp: s.createApp,
		RouteGetApp:    s.inApp(s.getApp),
		RouteDeleteApp: s.inApp(s.deleteApp),

		RouteListVolumes:  s.inApp(s.listVolumes),
		RouteCreateVolume: s.inApp(s.createVolume),
		RouteGetVolume:    s.inApp(s.getVolume),
		RouteDeleteVolume: s.inApp(s.deleteVolume),

		RouteListIPs:  s.inApp(s.listIPs),
		RouteAssignIP: s.inApp(s.assignIP),
		RouteDeleteIP: s.inApp(s.deleteIP),

		RouteListSecrets:   s.inApp(s.listSecrets),
		RouteUpdateSecrets: s.inApp(s.updateSecrets),
		RouteGetSecret:     s.inApp(s.getSecret),
		RouteSetSecret:     s.inApp(s.setSecret),
		RouteDeleteSecret:  s.inApp(s.deleteSecret),

		RouteListMachines:   s.inApp(s.listMachines),
		RouteLaunch:         s.inApp(s.launch),
		RouteGetMachine:     s.inMachine(s.getMachine),
		RouteUpdateMachine:  s.inMachine(s.updateMachine),
		RouteStartMachine:   s.inMachine(s.startMachine),
		RouteStopMachine:    s.inMachine(s.stopMachine),
		RouteDestroyMachine: s.inMachine(s.destroyMachine),
		RouteWait:           s.wait,
		RouteGetLease:       s.inMachine(s.getLease),
		RouteAcquireLease:   s.inMachine(s.acquireLease),
		RouteReleaseLease:   s.inMachine(s.releaseLease),
	} {
		mux.HandleFunc(string(route), s.wrap(route, h))
	}
	return mux
}

// inApp runs h under the lock with the app of the path, after applying due machine state
// changes; a missing or foreign app is answered for it.
func (s *Server) inApp(h func(http.ResponseWriter, *http.Request, *app)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		a, ok := s.ourApp(w, r)
		if !ok {
			return
		}
		s.advance()
		h(w, r, a)
	}
}

// inMachine is inApp for the machine of the path, destroyed ones included.
func (s *Server) inMachine(h func(http.ResponseWriter, *http.Request, *app, *machine)) http.HandlerFunc {
	return s.inApp(func(w http.ResponseWriter, r *http.Request, a *app) {
		if m, ok := findMachine(w, r, a); ok {
			h(w, r, a, m)
		}
	})
}

// wrap checks the token, then serves route with h through the fake's calls, latency and
// faults.
func (s *Server) wrap(route Route, h http.HandlerFunc) http.HandlerFunc {
	return s.api.Wrap(route, func(w http.ResponseWriter, r *http.Request) bool {
		if !s.authorized(r) {
			writeError(w, http.StatusUnauthorized, "unauthorized")
			return false
		}
		return true
	}, h)
}

func (s *Server) authorized(r *http.Request) bool {
	if s.cfg.Token == "" {
		return true
	}
	a := r.Header.Get("Authorization")
	return a == "Bearer "+s.cfg.Token || a == "FlyV1 "+s.cfg.Token
}

// now is the server's clock. Callers hold s.mu.
func (s *Server) now() time.Time { return s.cfg.Now().Add(s.offset) }

// broadcast wakes every waiter. Callers hold s.mu.
func (s *Server) broadcast() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// nextID returns a fresh, deterministic number. Callers hold s.mu.
func (s *Server) nextID() uint64 {
	s.seq++
	return s.seq
}

// errorBody is the Machines API's error shape: flaps reads "error" (or "message") as the
// error text and "status" as a machine-readable code.
type errorBody struct {
	Error  string `json:"error"`
	Status string `json:"status,omitempty"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

func writeCodedError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, errorBody{Error: msg, Status: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}

// decode reads a JSON body into dst; an empty body leaves dst zero. It reports false after
// answering 400.
func decode(w http.ResponseWriter, r *http.Request, dst any) bool {
	if r.Body == nil {
		return true
	}
	if err := json.NewDecoder(r.Body).Decode(dst); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+strings.SplitN(err.Error(), "\n", 2)[0])
		return false
	}
	return true
}
