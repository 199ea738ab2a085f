package wsrelay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/proxy/authn"
	"github.com/moltgate/moltgate/registry"
)

// Decider is the policy engine.
type Decider interface {
	Decide(ctx context.Context, in *policies.Input) (policies.Decision, error)
	Revision() string
	// Generation changes whenever the policy set or its data changes (policies.Engine).
	Generation() uint64
	// Fresh is nil while the engine's data is known to be current (policies.Engine).
	Fresh() error
	// ShadowRevision is the candidate set's revision, "" without one, and Shadow has it
	// decide a message answered from the socket's cache (policies.Engine).
	ShadowRevision() string
	Shadow(in *policies.Input, live policies.Decision)
}

// Auditor records security events.
type Auditor interface {
	Emit(ctx context.Context, e audit.Event) error
}

// Verifier verifies a Clerk session token presented again on an open socket.
type Verifier interface {
	Verify(ctx context.Context, token string) (authn.Identity, error)
}

// Gateways finds a gateway's current entry when a socket is re-decided.
type Gateways interface {
	Lookup(id string) (*registry.Entry, bool)
}

// Config bounds what one client can make the relay hold. Zero values are the defaults.
type Config struct {
	// AllowedOrigins are the exact browser origins (scheme://host[:port]) of dashboards that
	// may open a socket to any gateway, besides each gateway's own public origin
	// (Session.PublicOrigin). A request with any other Origin is refused: a page on another
	// site must not ride a user's cookies into their gateway (cross-site WebSocket
	// hijacking). Requests without Origin (CLI and machine clients) are not browsers and
	// pass. Default none.
	AllowedOrigins []string
	// MaxMessageBytes bounds one client message; larger closes the socket (1009). Default 1 MiB.
	MaxMessageBytes int64
	// MaxUpstreamMessageBytes bounds one gateway message. Default 64 MiB (streamed, not held).
	MaxUpstreamMessageBytes int64
	// MessagesPerSecond and Burst limit client messages; beyond, the socket closes (1008).
	// Defaults 50 and 100.
	MessagesPerSecond float64
	Burst             int
	// MaxConnsPerSubject bounds the open sockets of one user or token. Default 32.
	MaxConnsPerSubject int
	// IdleTimeout closes a socket with no message either way for this long. Default 10m.
	IdleTimeout time.Duration
	// IdentifyTimeout closes (1008) a socket opened without a credential that has not been
	// identified and allowed by its connect request this long after the upgrade. Default 10s.
	IdentifyTimeout time.Duration
	// WriteTimeout closes a socket whose client does not take a message in time (a slow
	// reader cannot make the relay hold more than one message for it). Default 10s.
	WriteTimeout time.Duration
	// PingInterval pings idle clients. Default 30s.
	PingInterval time.Duration
	// HTTPClient dials gateways. Default a client with no proxy and a 10s timeout.
	HTTPClient *http.Client
}

// Deps are the parts the relay works with.
type Deps struct {
	Gateways Gateways
	Policy   Decider
	Sessions Verifier // nil: sessions cannot be refreshed on a socket
	Audit    Auditor
	Logger   *slog.Logger
	Metrics  prometheus.Registerer
	Now      func() time.Time
	// Slots, when set, counts each subject's sockets across replicas (store.Slots): the
	// limit MaxConnsPerSubject holds for them together. Nil: per process.
	Slots Slots
}

// Slots counts held things against a limit across replicas; store.Slots implements it.
type Slots interface {
	// Take takes one of limit slots of key for id (unique in this process), or reports
	// that all are held.
	Take(ctx context.Context, key, id string, limit int) (bool, error)
	// Give gives back the slot of key that id holds.
	Give(ctx context.Context, key, id string) error
}

// Session is what the proxy decided at the upgrade.
type Session struct {
	Entry   *registry.Entry
	Subject policies.Subject
	// Expires ends the socket unless the client refreshes its session first; zero: never.
	Expires time.Time
	// Ended, when set, is closed when the subject's browser session ends (signed out,
	// revoked, its Clerk session over): the socket ends with it.
	Ended <-chan struct{}
	// Active, when set, is called at each client message: the browser session is in use.
	Active func()
	// Input is the allowed upgrade decision's input, re-decided when things change.
	Input     policies.Input
	Scopes    []string
	RequestID string
	Path      string // normalised
	RawQuery  string
	HTTPS     bool
	// PublicOrigin is the gateway's own origin as the browser reached it (PublicOrigin), ""
	// when none is trusted: a page there, the gateway's Control UI, may open sockets to it.
	PublicOrigin string
	// Identify, when set, means the upgrade carried no credential: the connect request's
	// auth.token identifies the caller (as the proxy identifies a bearer token, returning a
	// refusal status and reason on failure) and the socket is decided on that first frame.
	// Until then no gateway is dialled: the relay sends the client a challenge of its own
	// and dials only once the connect request is allowed (identify.go).
	Identify func(ctx context.Context, token string) (policies.Subject, time.Time, int, string)
}

// Relay relays and decides WebSockets. It is safe for concurrent use.
type Relay struct {
	cfg  Config
	deps Deps
	m    *metrics

	mu         sync.Mutex
	conns      map[*conn]struct{}
	perSubject map[string]int
	closing    bool
	wg         sync.WaitGroup

	// gen counts Rechecks: a socket's cached decisions are dropped when it moves.
	gen atomic.Uint64
	// slotSeq numbers the slots taken in Deps.Slots.
	slotSeq atomic.Uint64
}

// New returns a Relay.
func New(cfg Config, deps Deps) (*Relay, error) {
	if deps.Gateways == nil || deps.Policy == nil || deps.Audit == nil || deps.Logger == nil || deps.Metrics == nil {
		return nil, errors.New("wsrelay: Gateways, Policy, Audit, Logger and Metrics are required")
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 1 << 20
	}
	if cfg.MaxUpstreamMessageBytes <= 0 {
		cfg.MaxUpstreamMessageBytes = 64 << 20
	}
	if cfg.MessagesPerSecond <= 0 {
		cfg.MessagesPerSecond = 50
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 100
	}
	if cfg.MaxConnsPerSubject <= 0 {
		cfg.MaxConnsPerSubject = 32
	}
	def(&cfg.IdleTimeout, 10*time.Minute)
	def(&cfg.IdentifyTimeout, 10*time.Second)
	def(&cfg.WriteTimeout, 10*time.Second)
	def(&cfg.PingInterval, 30*time.Second)
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	}
	origins := make([]string, 0, len(cfg.AllowedOrigins))
	for _, o := range cfg.AllowedOrigins {
		if o = CanonicalOrigin(o); o != "" {
			origins = append(origins, o)
		}
	}
	cfg.AllowedOrigins = origins
	m, err := newMetrics(deps.Metrics)
	if err != nil {
		return nil, fmt.Errorf("wsrelay: metrics: %w", err)
	}
	return &Relay{cfg: cfg, deps: deps, m: m, conns: map[*conn]struct{}{}, perSubject: map[string]int{}}, nil
}

// Refusal is a reason the relay refuses an upgrade before accepting it; the proxy answers it.
type Refusal struct {
	Status int
	Reason string
}

func (r *Refusal) Error() string { return "wsrelay: refused: " + r.Reason }

// Serve accepts the client socket, dials the gateway and starts relaying, until either side
// closes, the socket is no longer allowed, or the relay shuts down (Shutdown waits for
// that). It returns once the socket is handed off. A *Refusal means nothing was accepted
// and the caller must answer the request.
//
// Everything that needs no identity (Origin, the connection limit, and before Serve the
// policy's allowlist) binds before any dial. A socket still to be identified (s.Identify)
// is not dialled here at all: the relay answers it until its connect request is allowed.
func (rl *Relay) Serve(w http.ResponseWriter, r *http.Request, s Session) error {
	origin, refusal := rl.upstreamOrigin(r, s)
	if refusal != nil {
		return refusal
	}
	key := subjectKey(s.Subject)
	if s.Identify != nil {
		// Not identified yet: bounded per client address until connect says who it is,
		// then counted as that subject's (conn.identify).
		key = pendingPrefix + s.Input.ClientIP
	}
	if refusal := rl.admit(key); refusal != nil {
		return refusal
	}
	giveBack, refusal := rl.takeShared(r.Context(), key, s.RequestID)
	handedOff := false
	defer func() {
		if !handedOff {
			rl.leave(key)
			giveBack()
		}
	}()
	if refusal != nil {
		return refusal
	}

	var upstream *websocket.Conn
	if s.Identify == nil {
		var err error
		if upstream, err = rl.dial(r.Context(), s, origin); err != nil {
			rl.m.closes.WithLabelValues(closeUnavailable).Inc()
			rl.deps.Logger.LogAttrs(r.Context(), slog.LevelWarn, "wsrelay: gateway dial failed",
				slog.String("request_id", s.RequestID), slog.String("gateway", s.Entry.ID), slog.Any("err", err))
			return &Refusal{http.StatusBadGateway, "upstream_unavailable"}
		}
	}
	// The Origin was checked above (upstreamOrigin); Accept's own same-host check would
	// refuse every dashboard, which lives on another host than the gateway.
	client, err := websocket.Accept(lentResponse{w}, r, &websocket.AcceptOptions{InsecureSkipVerify: true, CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		if upstream != nil {
			upstream.CloseNow()
		}
		return nil // Accept has answered the request
	}
	c := newConn(rl, s, client, upstream)
	c.slot, c.giveBack = key, giveBack
	_, c.upstreamCapped = scopeCap(s)
	c.upstreamOrigin = origin
	rl.mu.Lock()
	if rl.closing {
		rl.mu.Unlock()
		c.close(websocket.StatusGoingAway, "server shutting down")
		return nil
	}
	rl.conns[c] = struct{}{}
	rl.mu.Unlock()
	rl.m.open.Inc()
	// The socket runs on a goroutine of its own and this (the server's request goroutine)
	// returns: the upgrade's token check and decision grew its stack, which an idle socket
	// would keep for as long as it stays open.
	handedOff = true
	ctx := context.WithoutCancel(r.Context())
	go func() {
		defer func() { rl.leave(c.slot); c.giveBack() }() // identify may have moved it to the subject's count
		defer func() {
			rl.mu.Lock()
			delete(rl.conns, c)
			rl.mu.Unlock()
			rl.m.open.Dec()
		}()
		c.run(ctx)
	}()
	return nil
}

// pendingPrefix starts the key of sockets not identified yet, counted by client address.
const pendingPrefix = "pending:"

// subjectKey is the key a subject's sockets are counted under.
func subjectKey(s policies.Subject) string { return s.Kind + ":" + s.ID }

// admit counts a new socket under key, or refuses it: the relay is shutting down, or key
// holds MaxConnsPerSubject sockets already.
func (rl *Relay) admit(key string) *Refusal {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	switch {
	case rl.closing:
		return &Refusal{http.StatusServiceUnavailable, "shutting_down"}
	case rl.perSubject[key] >= rl.cfg.MaxConnsPerSubject:
		return &Refusal{http.StatusTooManyRequests, "too_many_connections"}
	}
	rl.perSubject[key]++
	rl.wg.Add(1)
	return nil
}

// recount moves a socket from key from to key to, unless to holds MaxConnsPerSubject
// sockets already: a socket identified by its connect request counts as its subject's.
func (rl *Relay) recount(from, to string) bool {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if rl.perSubject[to] >= rl.cfg.MaxConnsPerSubject {
		return false
	}
	rl.perSubject[to]++
	rl.uncount(from)
	return true
}

// takeShared takes a slot of key in the count across replicas (Deps.Slots) for a socket this
// relay counts under key already, and returns what gives it back. Sockets not identified
// yet are counted by this relay alone. A count that cannot be read refuses (fail closed).
func (rl *Relay) takeShared(ctx context.Context, key, requestID string) (func(), *Refusal) {
	nothing := func() {}
	if rl.deps.Slots == nil || strings.HasPrefix(key, pendingPrefix) {
		return nothing, nil
	}
	id := strconv.FormatUint(rl.slotSeq.Add(1), 10)
	ok, err := rl.deps.Slots.Take(ctx, key, id, rl.cfg.MaxConnsPerSubject)
	switch {
	case err != nil:
		rl.deps.Logger.LogAttrs(ctx, slog.LevelError, "wsrelay: connection count across replicas unavailable",
			slog.String("request_id", requestID), slog.Any("err", err))
		return nothing, &Refusal{http.StatusServiceUnavailable, "limits_unavailable"}
	case !ok:
		return nothing, &Refusal{http.StatusTooManyRequests, "too_many_connections"}
	}
	return func() {
		// Past its TTL the slot is free anyway: a failure here costs a slot for that long.
		_ = rl.deps.Slots.Give(context.Background(), key, id)
	}, nil
}

// leave counts an ended socket out of key.
func (rl *Relay) leave(key string) {
	rl.mu.Lock()
	rl.uncount(key)
	rl.mu.Unlock()
	rl.wg.Done()
}

func (rl *Relay) uncount(key string) {
	if rl.perSubject[key]--; rl.perSubject[key] <= 0 {
		delete(rl.perSubject, key)
	}
}

// dial opens the gateway side with the gateway's upstream credentials and origin, the Origin
// upstreamOrigin chose ("" for none): never the client's own Origin, cookies or credentials.
func (rl *Relay) dial(ctx context.Context, s Session, origin string) (*websocket.Conn, error) {
	u := *s.Entry.UpstreamURL
	switch u.Scheme {
	case "https":
		u.Scheme = "wss"
	default:
		u.Scheme = "ws"
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + s.Path
	u.RawPath, u.RawQuery = "", s.RawQuery
	h := http.Header{}
	if s.Entry.AuthMode == registry.AuthTrustedProxy {
		h.Set("X-Forwarded-User", s.Subject.ID)
		proto := "http"
		if s.HTTPS {
			proto = "https"
		}
		h.Set("X-Forwarded-Proto", proto)
		if s.Input.ClientIP != "" {
			h.Set("X-Forwarded-For", s.Input.ClientIP)
		}
	}
	if scopes, ok := scopeCap(s); ok {
		h.Set("X-Openclaw-Scopes", scopes)
	}
	if origin != "" {
		h.Set("Origin", origin)
	}
	h.Set("X-Request-Id", s.RequestID)
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	up, resp, err := websocket.Dial(dctx, (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawQuery: u.RawQuery}).String(),
		&websocket.DialOptions{HTTPClient: rl.cfg.HTTPClient, HTTPHeader: h, CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial: status %d: %w", resp.StatusCode, err)
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	up.SetReadLimit(rl.cfg.MaxUpstreamMessageBytes)
	return up, nil
}

// scopeCap returns the X-Openclaw-Scopes header of socket s, and whether it has one. The
// role's scopes cap the socket. In token mode the gateway grants the scopes the connect
// request asks for (which rewriteConnect caps, unless it keeps a device proof) and applies
// this header too, a second cap; a socket identified by its connect request is dialled only
// once it is decided, so it has its scopes by then too.
func scopeCap(s Session) (string, bool) {
	scopes := s.Scopes
	if s.Entry.AuthMode != registry.AuthTrustedProxy && len(scopes) == 0 {
		return "", false
	}
	if len(scopes) == 0 {
		scopes = []string{"operator.read"}
	}
	return strings.Join(scopes, ","), true
}

// Recheck re-decides the open sockets of gateway id ("" for all) and closes those no longer
// allowed. Call it after any change to policy, the registry or tokens.
func (rl *Relay) Recheck(ctx context.Context, id string) {
	rl.gen.Add(1)
	rl.mu.Lock()
	var cs []*conn
	for c := range rl.conns {
		if id == "" || c.s.Entry.ID == id {
			cs = append(cs, c)
		}
	}
	rl.mu.Unlock()
	for _, c := range cs {
		c.recheck(ctx)
	}
}

// Shutdown stops new sockets, sends every open one a close frame (1001) and waits for them to
// end, until ctx is done.
func (rl *Relay) Shutdown(ctx context.Context) error {
	rl.mu.Lock()
	rl.closing = true
	cs := make([]*conn, 0, len(rl.conns))
	for c := range rl.conns {
		cs = append(cs, c)
	}
	rl.mu.Unlock()
	for _, c := range cs {
		go c.close(websocket.StatusGoingAway, "server shutting down")
	}
	done := make(chan struct{})
	go func() { rl.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		rl.mu.Lock()
		for c := range rl.conns {
			c.client.CloseNow()
			c.mu.Lock()
			up := c.upstream
			c.mu.Unlock()
			if up != nil {
				up.CloseNow()
			}
		}
		rl.mu.Unlock()
		return ctx.Err()
	}
}

// Open is the number of relayed sockets.
func (rl *Relay) Open() int {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return len(rl.conns)
}
