// Package browser signs people in a browser in to one gateway's host, the way Pomerium and
// Coder do for proxied hosts: the dashboard's back end, holding the user's Clerk session,
// asks for a one-time launch code; following it gives the browser moltgate's own session,
// a host-only cookie that only that gateway's host receives.
//
// Invariants:
//   - Launch codes and session tokens are 32 random bytes; the store holds only their
//     SHA-256, so a copy of the store signs no one in.
//   - A launch code is used at most once (a compare-and-delete in the store), within its
//     lifetime (at most 60 s), on the gateway it was issued for.
//   - A session is valid only on its own gateway, within its idle timeout and lifetime, and,
//     when bound to a Clerk session, only while Clerk last said that session was active no
//     longer ago than the check interval plus the grace. Checking Clerk is never on the
//     request path: Run does it in the background.
package browser

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moltgate/moltgate/store"
)

// KV is the store sessions and launch codes live in; store.Bolt and store.Redis implement it.
type KV interface {
	Get(bucket, key string) ([]byte, error)
	ForEach(bucket string, fn func(key string, value []byte) error) error
	Swap(bucket, key string, old, new []byte) error
}

// ClerkSessions tells whether a Clerk session is still active (authn.ClerkSessions asks
// Clerk's Backend API).
type ClerkSessions interface {
	Active(ctx context.Context, sessionID string) (bool, error)
}

// Errors of Redeem and Lookup. Each has a stable reason (Reason).
var (
	ErrInvalid      = errors.New("browser: unknown, used or expired credential")
	ErrWrongGateway = errors.New("browser: credential of another gateway")
	ErrUnverified   = errors.New("browser: Clerk session not confirmed within the grace")
)

// Reason is the stable refusal reason of an error of this package.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrWrongGateway):
		return "wrong_gateway"
	case errors.Is(err, ErrUnverified):
		return "session_unverified"
	case errors.Is(err, ErrInvalid):
		return "bad_session"
	}
	return "internal"
}

const (
	sessionsBucket = "browser.sessions"
	codesBucket    = "browser.launch"
	// tokenBytes is the entropy of launch codes and session tokens.
	tokenBytes = 32
	// touchEvery bounds how often a session's last use is written to the store: idle
	// timeouts survive a restart to within this.
	touchEvery = time.Minute
)

// Config configures Sessions. Zero values are the documented defaults.
type Config struct {
	// IdleTimeout ends a session unused for this long. Default 30m.
	IdleTimeout time.Duration
	// Lifetime ends a session this long after it began, used or not. Default 12h.
	Lifetime time.Duration
	// CheckInterval is how often a Clerk-bound session's Clerk session is checked. Default 60s.
	CheckInterval time.Duration
	// Grace is how long a session lasts past a missed check while Clerk cannot be reached;
	// then it fails closed. Default 5m.
	Grace time.Duration
	// LaunchTTL is a launch code's lifetime. Default and maximum 60s.
	LaunchTTL time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Grant is whom a launch code or session is for.
type Grant struct {
	Gateway string `json:"gateway"`
	UserID  string `json:"user"`
	// ClerkSession is the Clerk session id the grant is bound to; empty while Clerk is off
	// (the development defaults).
	ClerkSession string `json:"clerk_session,omitempty"`
	OrgID        string `json:"org_id,omitempty"`
	OrgRole      string `json:"org_role,omitempty"`
	// FactorAges are Clerk's minutes since each factor was verified, as of FactorsAt.
	FactorAges []int     `json:"factor_ages,omitempty"`
	FactorsAt  time.Time `json:"factors_at,omitzero"`
}

// AgesNow are the factor ages at now: they keep counting after sign-in, so a method that
// needs a fresh second factor asks for one again.
func (g Grant) AgesNow(now time.Time) []int {
	if len(g.FactorAges) == 0 {
		return nil
	}
	mins := int(now.Sub(g.FactorsAt) / time.Minute)
	out := make([]int, len(g.FactorAges))
	for i, a := range g.FactorAges {
		out[i] = a
		if a >= 0 {
			out[i] = a + max(mins, 0)
		}
	}
	return out
}

// Session is one browser's sign-in to one gateway, as listed: never its token.
type Session struct {
	ID string `json:"id"`
	Grant
	Created  time.Time `json:"created"`
	LastSeen time.Time `json:"last_seen"`
	Expires  time.Time `json:"expires"`
	// Checked is when Clerk last said the Clerk session was active (zero without Clerk).
	Checked time.Time `json:"checked,omitzero"`
}

type code struct {
	Grant
	Return  string    `json:"return"`
	Expires time.Time `json:"expires"`
}

// live is a session in memory: its stored bytes (for compare-and-swap) and a channel
// closed when it ends, which its sockets wait on.
type live struct {
	s      Session
	stored []byte
	ended  chan struct{}
}

// Sessions issues launch codes and keeps browser sessions. It is safe for concurrent use.
type Sessions struct {
	cfg    Config
	kv     KV
	clerk  ClerkSessions
	logger *slog.Logger
	m      *metrics

	mu   sync.Mutex
	live map[string]*live // by session id

	persistMu sync.Mutex
}

// New returns Sessions on kv. clerk may be nil: sessions are then bound to no Clerk session.
func New(cfg Config, kv KV, clerk ClerkSessions, logger *slog.Logger, reg prometheus.Registerer) (*Sessions, error) {
	if kv == nil || logger == nil || reg == nil {
		return nil, errors.New("browser: KV, Logger and Registerer are required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.IdleTimeout, 30*time.Minute)
	def(&cfg.Lifetime, 12*time.Hour)
	def(&cfg.CheckInterval, time.Minute)
	def(&cfg.Grace, 5*time.Minute)
	def(&cfg.LaunchTTL, time.Minute)
	cfg.LaunchTTL = min(cfg.LaunchTTL, time.Minute)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Sessions{cfg: cfg, kv: kv, clerk: clerk, logger: logger, live: map[string]*live{}}
	m, err := newMetrics(reg, s.count)
	if err != nil {
		return nil, err
	}
	s.m = m
	return s, nil
}

// Issue returns a new launch code for g, good once within LaunchTTL, and when it expires.
// returnPath must come from SafeReturn.
func (s *Sessions) Issue(g Grant, returnPath string) (string, time.Time, error) {
	tok, key, err := newToken()
	if err != nil {
		return "", time.Time{}, err
	}
	c := code{Grant: g, Return: returnPath, Expires: s.cfg.Now().Add(s.cfg.LaunchTTL)}
	v, err := json.Marshal(c)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("browser: encode code: %w", err)
	}
	if err := s.kv.Swap(codesBucket, key, nil, v); err != nil {
		return "", time.Time{}, fmt.Errorf("browser: store code: %w", err)
	}
	s.m.launches.WithLabelValues("issued").Inc()
	return tok, c.Expires, nil
}

// Redeem spends a launch code on gateway and starts a session: it returns the session's
// token (the cookie value), the session and the path to send the browser to.
func (s *Sessions) Redeem(codeTok, gateway string) (string, Session, string, error) {
	key, ok := keyOf(codeTok)
	if !ok {
		s.m.launches.WithLabelValues("invalid").Inc()
		return "", Session{}, "", ErrInvalid
	}
	v, err := s.kv.Get(codesBucket, key)
	if errors.Is(err, store.ErrNotFound) {
		s.m.launches.WithLabelValues("invalid").Inc()
		return "", Session{}, "", ErrInvalid
	}
	if err != nil {
		return "", Session{}, "", fmt.Errorf("browser: read code: %w", err)
	}
	// Spent before it is judged: a code is tried once, whatever the outcome, and of two
	// browsers racing with one code only one deletes it.
	if err := s.kv.Swap(codesBucket, key, v, nil); err != nil {
		if errors.Is(err, store.ErrConflict) {
			s.m.launches.WithLabelValues("invalid").Inc()
			return "", Session{}, "", ErrInvalid
		}
		return "", Session{}, "", fmt.Errorf("browser: spend code: %w", err)
	}
	var c code
	if err := json.Unmarshal(v, &c); err != nil {
		return "", Session{}, "", fmt.Errorf("browser: code record corrupt: %w", err)
	}
	switch {
	case !s.cfg.Now().Before(c.Expires):
		s.m.launches.WithLabelValues("expired").Inc()
		return "", Session{}, "", ErrInvalid
	case c.Gateway != gateway:
		s.m.launches.WithLabelValues("wrong_gateway").Inc()
		return "", Session{}, "", ErrWrongGateway
	}
	tok, sess, err := s.Start(c.Grant)
	if err != nil {
		return "", Session{}, "", err
	}
	s.m.launches.WithLabelValues("redeemed").Inc()
	return tok, sess, c.Return, nil
}

// Start begins a session for g and returns its token: for a launch code, or for a browser
// whose Clerk session cookie was just verified.
func (s *Sessions) Start(g Grant) (string, Session, error) {
	tok, id, err := newToken()
	if err != nil {
		return "", Session{}, err
	}
	now := s.cfg.Now()
	sess := Session{ID: id, Grant: g, Created: now, LastSeen: now, Expires: now.Add(s.cfg.Lifetime)}
	if g.ClerkSession != "" {
		sess.Checked = now // the caller has just verified the Clerk session's token
	}
	v, err := json.Marshal(sess)
	if err != nil {
		return "", Session{}, fmt.Errorf("browser: encode session: %w", err)
	}
	if err := s.kv.Swap(sessionsBucket, id, nil, v); err != nil {
		return "", Session{}, fmt.Errorf("browser: store session: %w", err)
	}
	s.mu.Lock()
	s.live[id] = &live{s: sess, stored: v, ended: make(chan struct{})}
	s.mu.Unlock()
	return tok, sess, nil
}

// Lookup returns the session of token on gateway, and a channel closed when it ends. It
// reads the store only for a session this process has not seen (after a restart).
func (s *Sessions) Lookup(tok, gateway string) (Session, <-chan struct{}, error) {
	id, ok := keyOf(tok)
	if !ok {
		return Session{}, nil, ErrInvalid
	}
	l, err := s.load(id)
	if err != nil {
		return Session{}, nil, err
	}
	now := s.cfg.Now()
	s.mu.Lock()
	sess, ended := l.s, l.ended
	if reason := s.endReason(sess, now); reason != "" {
		s.mu.Unlock()
		s.end(id, reason)
		return Session{}, nil, ErrInvalid
	}
	if sess.Gateway != gateway {
		s.mu.Unlock()
		return Session{}, nil, ErrWrongGateway
	}
	if sess.ClerkSession != "" && s.clerk != nil && now.Sub(sess.Checked) > s.cfg.CheckInterval+s.cfg.Grace {
		s.mu.Unlock()
		return Session{}, nil, ErrUnverified
	}
	s.mu.Unlock()
	s.Touch(id)
	return sess, ended, nil
}

// Touch records a use of session id now: a request, or a message on one of its sockets (a
// Control UI talks over its socket only, and is in use for as long as it does). The store
// learns of it at most once a minute.
func (s *Sessions) Touch(id string) {
	now := s.cfg.Now()
	s.mu.Lock()
	l, ok := s.live[id]
	if !ok {
		s.mu.Unlock()
		return
	}
	due := now.Sub(l.s.LastSeen) >= touchEvery
	l.s.LastSeen = now
	s.mu.Unlock()
	if due {
		s.persist(id)
	}
}

// endReason is why sess is over at now, or "".
func (s *Sessions) endReason(sess Session, now time.Time) string {
	switch {
	case !now.Before(sess.Expires):
		return "lifetime"
	case now.Sub(sess.LastSeen) >= s.cfg.IdleTimeout:
		return "idle"
	}
	return ""
}

// load returns the live session id, reading it from the store if this process has not.
func (s *Sessions) load(id string) (*live, error) {
	s.mu.Lock()
	l, ok := s.live[id]
	s.mu.Unlock()
	if ok {
		return l, nil
	}
	v, err := s.kv.Get(sessionsBucket, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrInvalid
	}
	if err != nil {
		return nil, fmt.Errorf("browser: read session: %w", err)
	}
	var sess Session
	if err := json.Unmarshal(v, &sess); err != nil || sess.ID != id {
		return nil, fmt.Errorf("browser: session record corrupt")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.live[id]; ok { // loaded by another request meanwhile
		return l, nil
	}
	l = &live{s: sess, stored: v, ended: make(chan struct{})}
	s.live[id] = l
	return l, nil
}

// persist writes a live session's last use and check time, unless it was ended meanwhile:
// a revoked session is never written back. One at a time, so this process's writes never
// conflict with each other; a conflict means another writer, and the record is read again.
func (s *Sessions) persist(id string) {
	s.persistMu.Lock()
	defer s.persistMu.Unlock()
	s.mu.Lock()
	l, ok := s.live[id]
	if !ok {
		s.mu.Unlock()
		return
	}
	old := l.stored
	v, err := json.Marshal(l.s)
	s.mu.Unlock()
	if err != nil {
		return
	}
	err = s.kv.Swap(sessionsBucket, id, old, v)
	if errors.Is(err, store.ErrConflict) {
		v, err = s.kv.Get(sessionsBucket, id)
		if errors.Is(err, store.ErrNotFound) {
			s.forget(id) // revoked elsewhere
			return
		}
	}
	if err != nil {
		s.logger.Warn("browser: session not updated", "err", err)
		return
	}
	s.mu.Lock()
	if l, ok := s.live[id]; ok {
		l.stored = v
	}
	s.mu.Unlock()
}

// Changed brings a session this process holds up to date with a change of the store that
// may have been made elsewhere (another replica revoking it): a session no longer stored
// ends here too, and its sockets close. Changes of other buckets are ignored.
func (s *Sessions) Changed(bucket, id string) error {
	if bucket != sessionsBucket {
		return nil
	}
	s.mu.Lock()
	_, held := s.live[id]
	s.mu.Unlock()
	if !held {
		return nil
	}
	_, err := s.kv.Get(sessionsBucket, id)
	if errors.Is(err, store.ErrNotFound) {
		s.forget(id)
		return nil
	}
	return err
}

// Reload is Changed for every session this process holds.
func (s *Sessions) Reload() error {
	s.mu.Lock()
	ids := slices.Collect(maps.Keys(s.live))
	s.mu.Unlock()
	var errs []error
	for _, id := range ids {
		errs = append(errs, s.Changed(sessionsBucket, id))
	}
	return errors.Join(errs...)
}

// forget drops a session from memory, closing what waits on it.
func (s *Sessions) forget(id string) {
	s.mu.Lock()
	l, ok := s.live[id]
	delete(s.live, id)
	s.mu.Unlock()
	if ok {
		close(l.ended)
	}
}

// end ends session id: removed from the store, its sockets closed.
func (s *Sessions) end(id, reason string) {
	err := s.delete(id)
	if err != nil {
		s.logger.Warn("browser: session not removed from the store", "err", err)
	}
	s.forget(id)
	s.m.ended.WithLabelValues(reason).Inc()
}

func (s *Sessions) delete(id string) error {
	for range 8 {
		v, err := s.kv.Get(sessionsBucket, id)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.kv.Swap(sessionsBucket, id, v, nil); !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	return errors.New("browser: session changed concurrently")
}

// Revoke ends session id. It reports whether there was one (false: unknown or over).
func (s *Sessions) Revoke(id string) (Session, bool, error) {
	v, err := s.kv.Get(sessionsBucket, id)
	if errors.Is(err, store.ErrNotFound) {
		s.forget(id)
		return Session{}, false, nil
	}
	if err != nil {
		return Session{}, false, fmt.Errorf("browser: read session: %w", err)
	}
	var sess Session
	if err := json.Unmarshal(v, &sess); err != nil {
		return Session{}, false, fmt.Errorf("browser: session record corrupt")
	}
	if err := s.delete(id); err != nil {
		return Session{}, false, fmt.Errorf("browser: revoke: %w", err)
	}
	s.forget(id)
	s.m.ended.WithLabelValues("revoked").Inc()
	return sess, true, nil
}

// SignOut ends the session of token, if there is one.
func (s *Sessions) SignOut(tok string) { s.EndToken(tok, "signed_out") }

// EndToken ends the session of token, if there is one, counting it under reason
// ("access_lost": its user is no longer allowed on its gateway).
func (s *Sessions) EndToken(tok, reason string) {
	if id, ok := keyOf(tok); ok {
		s.end(id, reason)
	}
}

// List returns the stored sessions that keep passes, oldest first.
func (s *Sessions) List(keep func(Session) bool) ([]Session, error) {
	now := s.cfg.Now()
	out := []Session{}
	err := s.kv.ForEach(sessionsBucket, func(_ string, v []byte) error {
		var sess Session
		if json.Unmarshal(v, &sess) != nil {
			return nil
		}
		s.mu.Lock()
		if l, ok := s.live[sess.ID]; ok {
			sess.LastSeen = l.s.LastSeen
		}
		s.mu.Unlock()
		if s.endReason(sess, now) == "" && keep(sess) {
			out = append(out, sess)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("browser: list: %w", err)
	}
	sortByCreated(out)
	return out, nil
}

// count is the number of sessions this process holds, for the gauge.
func (s *Sessions) count() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return float64(len(s.live))
}

// newToken returns a fresh random token (base64url, no padding) and its store key.
func newToken() (tok, key string, err error) {
	var b [tokenBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("browser: random: %w", err)
	}
	tok = base64.RawURLEncoding.EncodeToString(b[:])
	key, _ = keyOf(tok)
	return tok, key, nil
}

// keyOf is the store key of a token: the hex of the first 16 bytes of its SHA-256, which is
// also a session's public id. ok is false for anything that is not a token's shape, so no
// attacker-sized value is hashed or looked up.
func keyOf(tok string) (string, bool) {
	if len(tok) != base64.RawURLEncoding.EncodedLen(tokenBytes) || strings.ContainsFunc(tok, notB64URL) {
		return "", false
	}
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:16]), true
}

func notB64URL(r rune) bool {
	return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_')
}
