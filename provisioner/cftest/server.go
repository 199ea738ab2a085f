package cftest

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moltgate/moltgate/provisioner/internal/fakeapi"
)

// Config sets up a Server. The zero value is a working fake of account "acc-test" and zone
// "zone-test" (example.test) that checks no token.
type Config struct {
	// AccountID is the only account the fake serves; others answer 403 (code 10000).
	// Default "acc-test".
	AccountID string
	// ZoneID is the only zone the fake serves; others answer 403 (code 10000). Default
	// "zone-test".
	ZoneID string
	// Zone is the zone's name: DNS record names must be it or end in "."+Zone. Default
	// "example.test".
	Zone string
	// Token, when set, must be presented on every request as "Authorization: Bearer
	// <Token>"; other requests get 400 with code 10000 (Authentication error). Default: no
	// check.
	Token string
	// MaxPerPage caps per_page on list routes; DefaultPerPage is used when a request sets
	// none. Defaults 50 and 20.
	MaxPerPage     int
	DefaultPerPage int
	// Latency, when set, is called once per request and the request waits that long before
	// it is handled (benches inject 100–800 ms). Default none.
	Latency func() time.Duration
	// Now is the server's clock, for created_at and deleted_at. Default time.Now.
	Now func() time.Time
}

// Server is a running fake of the Cloudflare API. Its methods are safe for concurrent use.
type Server struct {
	// URL is the base URL of the fake, for example http://127.0.0.1:PORT; the API is under
	// URL+"/client/v4/".
	URL string

	cfg Config
	api *fakeapi.API // the server, its calls, latency and faults

	mu       sync.Mutex
	seq      uint64
	tunnels  map[string]*tunnel
	records  map[string]*record
	tokens   map[string]*serviceToken
	policies map[string]*policy
	apps     map[string]*app
}

// New starts a fake on a loopback port. Close it when done.
func New(cfg Config) (*Server, error) {
	setDefault(&cfg.AccountID, "acc-test")
	setDefault(&cfg.ZoneID, "zone-test")
	setDefault(&cfg.Zone, "example.test")
	setDefault(&cfg.MaxPerPage, 50)
	setDefault(&cfg.DefaultPerPage, 20)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var errs []error
	if cfg.MaxPerPage < 1 || cfg.DefaultPerPage < 1 {
		errs = append(errs, errors.New("max_per_page, default_per_page: under 1"))
	}
	if cfg.DefaultPerPage > cfg.MaxPerPage {
		errs = append(errs, fmt.Errorf("default_per_page: %d above max_per_page %d", cfg.DefaultPerPage, cfg.MaxPerPage))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("cftest: config: %w", err)
	}
	s := &Server{
		cfg:      cfg,
		api:      fakeapi.New(answers{}, cfg.Latency),
		tunnels:  map[string]*tunnel{},
		records:  map[string]*record{},
		tokens:   map[string]*serviceToken{},
		policies: map[string]*policy{},
		apps:     map[string]*app{},
	}
	s.URL = s.api.Serve(s.routes())
	return s, nil
}

func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// Close ends stalled requests and shuts the server down.
func (s *Server) Close() { s.api.Close() }

// BaseURL is the URL to give option.WithBaseURL: URL + "/client/v4/".
func (s *Server) BaseURL() string { return s.URL + "/client/v4/" }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	for route, h := range map[Route]http.HandlerFunc{
		RouteListTunnels:     s.inAccount(s.listTunnels),
		RouteCreateTunnel:    s.inAccount(s.createTunnel),
		RouteGetTunnel:       s.inAccount(s.getTunnel),
		RouteDeleteTunnel:    s.inAccount(s.deleteTunnel),
		RouteGetTunnelConfig: s.inAccount(s.getTunnelConfig),
		RoutePutTunnelConfig: s.inAccount(s.putTunnelConfig),
		RouteGetTunnelToken:  s.inAccount(s.getTunnelToken),

		RouteListRecords:  s.inZone(s.listRecords),
		RouteCreateRecord: s.inZone(s.createRecord),
		RouteGetRecord:    s.inZone(s.getRecord),
		RouteUpdateRecord: s.inZone(s.updateRecord),
		RouteDeleteRecord: s.inZone(s.deleteRecord),

		RouteListServiceTokens:  s.inAccount(s.listServiceTokens),
		RouteCreateServiceToken: s.inAccount(s.createServiceToken),
		RouteGetServiceToken:    s.inAccount(s.getServiceToken),
		RouteDeleteServiceToken: s.inAccount(s.deleteServiceToken),

		RouteListPolicies: s.inAccount(s.listPolicies),
		RouteCreatePolicy: s.inAccount(s.createPolicy),
		RouteGetPolicy:    s.inAccount(s.getPolicy),
		RouteUpdatePolicy: s.inAccount(s.updatePolicy),
		RouteDeletePolicy: s.inAccount(s.deletePolicy),
		RouteListApps:     s.inAccount(s.listApps),
		RouteCreateApp:    s.inAccount(s.createApp),
		RouteGetApp:       s.inAccount(s.getApp),
		RouteUpdateApp:    s.inAccount(s.updateApp),
		RouteDeleteApp:    s.inAccount(s.deleteApp),
	} {
		mux.HandleFunc(string(route), s.wrap(route, h))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, 7003, "Could not route to "+r.URL.Path+", perhaps your object identifier is invalid?")
	})
	return mux
}

// inAccount runs h under the lock when the path's account is the fake's.
func (s *Server) inAccount(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("acc") != s.cfg.AccountID {
			writeError(w, http.StatusForbidden, 10000, "Authentication error")
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		h(w, r)
	}
}

// inZone runs h under the lock when the path's zone is the fake's.
func (s *Server) inZone(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("zone") != s.cfg.ZoneID {
			writeError(w, http.StatusForbidden, 10000, "Authentication error")
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		h(w, r)
	}
}

// wrap checks the token, then serves route with h through the fake's calls, latency and
// faults.
func (s *Server) wrap(route Route, h http.HandlerFunc) http.HandlerFunc {
	return s.api.Wrap(route, func(w http.ResponseWriter, r *http.Request) bool {
		if s.cfg.Token != "" && r.Header.Get("Authorization") != "Bearer "+s.cfg.Token {
			writeError(w, http.StatusBadRequest, 10000, "Authentication error")
			return false
		}
		return true
	}, h)
}

// now is the server's clock, in UTC as the API answers.
func (s *Server) now() time.Time { return s.cfg.Now().UTC() }

// uuid returns a fresh, deterministic UUID-shaped id. Callers hold s.mu.
func (s *Server) uuid() string {
	s.seq++
	return fmt.Sprintf("%08x-0000-4000-8000-%012x", s.seq, s.seq)
}

// hexID returns a fresh 32-hex-digit id, the shape of DNS record ids. Callers hold s.mu.
func (s *Server) hexID() string {
	s.seq++
	return fmt.Sprintf("%032x", s.seq)
}

// envelope is the v4 answer shape.
type envelope struct {
	Success    bool         `json:"success"`
	Errors     []apiMessage `json:"errors"`
	Messages   []apiMessage `json:"messages"`
	Result     any          `json:"result"`
	ResultInfo *resultInfo  `json:"result_info,omitempty"`
}

type apiMessage struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

type resultInfo struct {
	Page       int `json:"page"`
	PerPage    int `json:"per_page"`
	Count      int `json:"count"`
	TotalCount int `json:"total_count"`
	TotalPages int `json:"total_pages"`
}

func writeResult(w http.ResponseWriter, status int, result any) {
	writeJSON(w, status, envelope{Success: true, Errors: []apiMessage{}, Messages: []apiMessage{}, Result: result})
}

func writeError(w http.ResponseWriter, status, code int, msg string) {
	writeJSON(w, status, envelope{Errors: []apiMessage{{Code: code, Message: msg}}, Messages: []apiMessage{}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writePage answers one page of items, as page and per_page of the query ask. A page past
// the end is empty, not an error.
func writePage[T any](w http.ResponseWriter, r *http.Request, s *Server, items []T) {
	q := r.URL.Query()
	page, err := strconv.Atoi(q.Get("page"))
	if err != nil || page < 1 {
		page = 1
	}
	per, err := strconv.Atoi(q.Get("per_page"))
	if err != nil || per < 1 {
		per = s.cfg.DefaultPerPage
	}
	per = min(per, s.cfg.MaxPerPage)
	start := min((page-1)*per, len(items))
	end := min(start+per, len(items))
	out := items[start:end]
	if out == nil {
		out = []T{}
	}
	writeJSON(w, http.StatusOK, envelope{
		Success: true, Errors: []apiMessage{}, Messages: []apiMessage{}, Result: out,
		ResultInfo: &resultInfo{Page: page, PerPage: per, Count: len(out), TotalCount: len(items),
			TotalPages: (len(items) + per - 1) / per},
	})
}

// sortedByCreation returns the map's values oldest first (ids are minted in order).
func sortedByCreation[T any](m map[string]*T, created func(*T) uint64) []*T {
	out := make([]*T, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b *T) int { return cmp.Compare(created(a), created(b)) })
	return out
}

// decode reads a JSON body into dst. It reports false after answering 400.
func decode(w http.ResponseWriter, r *http.Request, dst any) bool {
	if err := json.NewDecoder(r.Body).Decode(dst); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, 1001, "Invalid JSON body: "+strings.SplitN(err.Error(), "\n", 2)[0])
		return false
	}
	return true
}

var hostnameRE = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
