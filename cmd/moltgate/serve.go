package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/proxy"
	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/proxy/authn"
	"github.com/moltgate/moltgate/proxy/browser"
	"github.com/moltgate/moltgate/proxy/wsrelay"
	"github.com/moltgate/moltgate/registry"
	"github.com/moltgate/moltgate/store"
)

const (
	devMasterKeyFile  = "master.key"
	devAdminTokenFile = "admin.token"
)

// serve runs the proxy and admin listeners until ctx ends, then drains and flushes audit.
func serve(ctx context.Context, cfg *Config, env func(string) string, stderr io.Writer) error {
	logger := newLogger(cfg.Log, stderr)
	// go-redis reports its own connection trouble through a process-wide logger; without
	// this it writes plain text to stderr, outside the structured log.
	redis.SetLogger(redisLogger{logger})
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	adminTok, err := adminTokenSecret(cfg, env, logger)
	if err != nil {
		return err
	}

	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// What serve opens is closed on every return but a shutdown past its deadline, which
	// leaves it to the process's exit rather than wait on something stuck.
	var closers []func() error
	defer func() {
		for _, c := range slices.Backward(closers) {
			c()
		}
	}()
	kv, shared, err := openStore(ctx, cfg, env)
	if err != nil {
		return err
	}
	closers = append(closers, kv.Close)
	metrics.MustRegister(kv.Collector())
	// On a shared store, the change stream is followed from before anything reads the
	// store, so no change falls between what is loaded next and what the stream brings.
	var view replicaView
	var follower *store.Follower
	var fresh func() error
	var replicaName *store.Lease
	if shared != nil {
		if replicaName, err = claimReplica(kv, cfg.Audit.Replica, cfg.Cluster.LeaseTTL); err != nil {
			return err
		}
		closers = append(closers, func() error { replicaName.Release(); return nil })
		follower, err = shared.Follow(ctx, store.FollowConfig{MaxStaleness: cfg.Cluster.MaxStaleness,
			Apply: view.apply, Reload: view.reload, Logger: logger})
		if err != nil {
			return err
		}
		metrics.MustRegister(follower)
		fresh = follower.Fresh
	}
	masterSrc, err := masterSource(ctx, cfg, env, kv, logger, stderr)
	if err != nil {
		return err
	}
	ks, err := openKeystore(ctx, masterSrc, kv)
	if err != nil {
		return err
	}
	auditStack, err := openAudit(cfg, env, kv, ks, logger, metrics)
	if err != nil {
		return err
	}
	auditLog := auditStack.log
	closers = append(closers, auditLog.Close)

	policyBundle, err := cfg.Policies.engineBundle(env)
	if err != nil {
		return err
	}
	engine, err := policies.New(ctx, policies.Config{Dir: cfg.Policies.Dir, Timeout: cfg.Policies.Timeout, Fresh: fresh, Bundle: policyBundle,
		MemoSize:  cfg.Policies.Memo.engineSize(),
		ShadowDir: cfg.Policies.Shadow.Dir, ShadowReport: shadowReporter(context.WithoutCancel(ctx), auditLog, logger)}, logger, metrics)
	if err != nil {
		return err
	}
	// Candidate evaluations in flight report to audit: they end before it closes.
	closers = append(closers, func() error { engine.Close(); return nil })
	// A promoted revision in the store overrides policies.dir; one that no longer loads
	// leaves the configured set deciding, with the refusal in /readyz.
	revisions := policies.NewRevisions(engine, kv)
	if _, err := revisions.Load(ctx); err != nil {
		logger.Error("promoted policy revision not loaded; the configured set decides", "err", err)
	}
	if err := engine.SetPlatformAdmins(ctx, cfg.PlatformAdmins); err != nil {
		return err
	}
	gateways, err := registry.New(ctx, kv, ks, engine, nil)
	if err != nil {
		return err
	}
	prov, err := newProvisioning(cfg, env, kv, ks, gateways, auditLog, logger, metrics)
	if err != nil {
		return err
	}
	keySvc, err := newKeyServices(cfg, env, ks, kv, masterSrc, auditLog, logger,
		append([]keystore.Target{gateways, checkpointKeyTarget(kv)}, prov.keyTargets()...)...)
	if err != nil {
		return err
	}
	if err := prov.setKeys(keySvc.keys, auditLog); err != nil {
		return err
	}
	// data.tenant_keys: every key change re-reads that tenant's active keys into policy data
	// (store first, then policy, before the admin API answers); then a full load.
	keySvc.keys.Subscribe(func(ctx context.Context, tenant string) {
		if err := engine.SyncTenantKeys(ctx, keySvc.keys, tenant); err != nil {
			// Policy must not go on seeing a key that may have been revoked: without a
			// fresh read, the tenant has no active key in policy data (fail closed).
			rmErr := engine.SetTenantKeys(ctx, tenant, nil)
			logger.LogAttrs(ctx, slog.LevelError, "policy data: tenant keys not updated; dropped until the next change of the tenant",
				slog.String("tenant", tenant), slog.Any("err", err), slog.Any("drop_err", rmErr))
		}
	})
	if err := engine.LoadTenantKeys(ctx, keySvc.keys); err != nil {
		return err
	}

	var sessions proxy.Verifier
	var clerkSessions browser.ClerkSessions // nil while Clerk is off: sessions bound to no Clerk session
	if c := cfg.Clerk; c != nil {
		secret, err := c.SecretKey.resolve(env)
		if err != nil {
			return fmt.Errorf("clerk.secret_key: %w", err)
		}
		clerk, err := authn.NewClerk(authn.ClerkConfig{APIURL: c.APIURL, SecretKey: string(secret), Issuer: c.Issuer,
			AuthorizedParties: c.AuthorizedParties, Leeway: c.Leeway}, logger, metrics)
		if err != nil {
			return err
		}
		sessions, clerkSessions = clerk, clerk
	}
	browsers, err := browser.New(browser.Config{IdleTimeout: cfg.Browser.IdleTimeout, Lifetime: cfg.Browser.Lifetime,
		CheckInterval: cfg.Browser.SessionCheckInterval, Grace: cfg.Browser.ClerkGrace}, kv, clerkSessions, logger, metrics)
	if err != nil {
		return err
	}
	var signIn *url.URL
	if cfg.Browser.SignInURL != "" {
		signIn, _ = url.Parse(cfg.Browser.SignInURL) // checked by Validate
	}

	// Proxy traffic and socket messages are sampled into the decision log; the admin API's
	// changes are all on record already, and its listings decide once per gateway shown.
	decider, err := cfg.Policies.DecisionLog.open(engine, auditLog, logger, metrics)
	if err != nil {
		return err
	}

	// On the shared store, each subject's sockets are counted across the replicas.
	var wsSlots wsrelay.Slots
	var slots *store.Slots
	if shared != nil {
		slots = shared.Slots("moltgate:slots:ws:", 0)
		wsSlots = slots
	}
	relay, err := wsrelay.New(wsrelay.Config{
		AllowedOrigins: cfg.WebSocket.AllowedOrigins, MaxMessageBytes: cfg.WebSocket.MaxMessageBytes,
		MessagesPerSecond: cfg.WebSocket.MessagesPerSecond, Burst: cfg.WebSocket.Burst,
		MaxConnsPerSubject: cfg.WebSocket.MaxConnsPerSubject, IdleTimeout: cfg.WebSocket.IdleTimeout,
		WriteTimeout: cfg.WebSocket.WriteTimeout, IdentifyTimeout: cfg.WebSocket.IdentifyTimeout,
		HTTPClient: prov.wsClient(),
	}, wsrelay.Deps{Gateways: gateways, Policy: decider, Sessions: sessions, Audit: auditLog, Logger: logger, Metrics: metrics,
		Slots: wsSlots})
	if err != nil {
		return err
	}
	// Authorization is continuous: every registry change re-decides the open sockets of
	// that gateway (a removed member loses a live socket at once).
	gateways.Subscribe(func(id string) { go relay.Recheck(context.WithoutCancel(ctx), id) })
	view = replicaView{gateways: gateways, keys: keySvc.keys, ks: ks, rotator: keySvc.rotator, browsers: browsers, engine: engine, relay: relay,
		revisions: revisions}

	var sharedLimits redis.Scripter // rate limits in memory on bbolt, shared by the replicas on Redis
	if shared != nil {
		sharedLimits = shared.Client()
	}
	authFailures, blocks, err := authFailureBudget(cfg.Proxy.AuthFailures, kv, sharedLimits, logger)
	if err != nil {
		return err
	}
	view.blocks = blocks
	trusted := cfg.trustedPrefixes()
	handler, err := proxy.New(proxy.Config{
		GatewayDomain:    cfg.GatewayDomain,
		TrustedProxies:   trusted,
		MaxToolBodyBytes: cfg.Limits.MaxToolBodyBytes,
		// A token rotation in flight retries a 401 with the gateway's other token (provisioner).
		Transport: prov.upstream(proxy.NewTransport(proxy.TransportConfig{DialTimeout: cfg.Upstream.DialTimeout,
			ResponseHeaderTimeout: cfg.Upstream.ResponseHeaderTimeout, MaxIdleConnsPerHost: cfg.Upstream.MaxIdleConnsPerHost})),
		SignInURL: signIn, AuthFailureWindow: cfg.Proxy.AuthFailures.Window,
	}, proxy.Deps{Gateways: gateways, Policy: decider, Sessions: sessions, Audit: auditLog, Logger: logger, Metrics: metrics,
		Relay: relay, Browser: browsers, AuthFailures: authFailures})
	if err != nil {
		return err
	}
	limits, err := adminLimits(cfg.Admin.RateLimit, time.Now, sharedLimits)
	if err != nil {
		return err
	}
	adminAPI, err := admin.New(admin.Config{AdminToken: adminTok, TrustedProxies: trusted, GatewayURL: cfg.gatewayURL(),
		AuthFailureWindow: cfg.Proxy.AuthFailures.Window},
		admin.Deps{Registry: gateways, Policy: engine, Evaluator: engine, Sessions: sessions, Audit: auditLog, Logger: logger,
			Keys: keySvc.keys, Rotator: keySvc.rotator, Limits: limits, Metrics: metrics, Browser: browsers,
			Provisioner: prov.prov, Revisions: recheckedRevisions{revisions, relay}, AuthFailures: authFailures})
	if err != nil {
		return err
	}

	var draining atomic.Bool
	adminMux := http.NewServeMux()
	adminMux.Handle("GET /metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{Registry: metrics}))
	adminMux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	adminMux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		if err := auditLog.Ready(); err != nil {
			http.Error(w, "audit unavailable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if err := kv.Stuck(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if err := engine.Fresh(); err != nil {
			http.Error(w, "cluster: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
		// A refused candidate set leaves the previous one deciding: ready, with the why.
		fmt.Fprintf(w, "policy revision %s\n", engine.Revision())
		if r := engine.LastRefusal(); r != nil {
			fmt.Fprintf(w, "policy candidate refused at %s: %v\n", r.Time.UTC().Format(time.RFC3339), r.Err)
		}
		writeBundleStatus(w, engine.BundleStatus())
		if reason, detail := engine.MemoStatus(); reason != "" {
			fmt.Fprintf(w, "policy decision memo off (%s): %s\n", reason, detail)
		}
		writeShadowStatus(w, engine)
	})
	// Every other path is the admin API's, so that calls no route takes are its probes.
	adminMux.Handle("/", auditGate(adminAPI, auditLog.Ready))

	proxyLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	adminLn, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		proxyLn.Close()
		return fmt.Errorf("admin_listen: %w", err)
	}
	proxySrv := newServer(auditGate(handler, auditLog.Ready), logger)
	adminSrv := newServer(adminAPI.Guard(adminMux), logger)
	logger.Info("moltgate serving", "proxy", proxyLn.Addr().String(), "admin", adminLn.Addr().String(),
		"gateway_domain", cfg.GatewayDomain, "gateways", gateways.Len(), "policy_revision", engine.Revision(),
		"sessions", sessions != nil, "version", version)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveUntilClosed(proxySrv, proxyLn) })
	g.Go(func() error { return serveUntilClosed(adminSrv, adminLn) })
	// Audit outlives the listeners: events of requests drained at shutdown are still taken.
	auditCtx, stopAudit := context.WithCancel(context.WithoutCancel(ctx))
	g.Go(func() error { return auditStack.run(auditCtx) })
	reloaded := policyReloaded(gctx, engine, relay, auditLog, logger)
	view.policyChanged = reloaded // a revision promoted or rolled back on another replica
	g.Go(func() error { reloadOnHangup(gctx, engine, reloaded); return nil })
	if cfg.Policies.Watch {
		g.Go(func() error { return engine.Watch(gctx, func(err error) { reloaded("watch", err) }) })
	}
	if policyBundle != nil {
		g.Go(func() error { return engine.PollBundle(gctx, func(err error) { reloaded("bundle", err) }) })
	}
	if follower != nil {
		// The view of the shared store, kept current until the very end of the shutdown.
		g.Go(func() error { follower.Run(auditCtx); return nil })
		g.Go(func() error { slots.Run(auditCtx); return nil })
	}
	// Key rotation runs in the background and resumes an unfinished one at start.
	g.Go(func() error { return keySvc.rotator.Run(gctx) })
	if replicaName != nil {
		g.Go(func() error { return keepReplica(gctx, replicaName, cfg.Audit.Replica, cfg.Cluster.LeaseTTL, logger) })
	}
	// Browser sessions: Clerk checks and expiry, off the request path.
	g.Go(func() error { return browsers.Run(gctx) })
	drain, drained := make(chan struct{}), make(chan struct{})
	// Provisioning reconciles in the background; local gateways stop after the drain.
	g.Go(func() error { return prov.run(gctx, drained, cfg.ShutdownTimeout/3) })
	g.Go(func() error {
		<-gctx.Done()
		defer close(drained)
		close(drain)
		draining.Store(true)
		logger.Info("moltgate draining", "timeout", cfg.ShutdownTimeout.String())
		defer stopAudit()
		sctx, cancel := context.WithTimeout(context.Background(), drainTimeout(cfg.ShutdownTimeout))
		defer cancel()
		// Sockets are hijacked connections that http.Server.Shutdown does not track: the
		// relay sends them close frames and waits for them itself.
		return errors.Join(proxySrv.Shutdown(sctx), relay.Shutdown(sctx), adminSrv.Shutdown(sctx))
	})
	stopped := make(chan error, 1)
	go func(closers []func() error) {
		err := g.Wait()
		for _, c := range slices.Backward(closers) {
			err = errors.Join(err, c())
		}
		stopped <- err
	}(closers)
	closers = nil
	<-drain
	// From here the whole shutdown has shutdown_timeout, whatever is stuck: a request held
	// by a stalled store or sink, a flush, a close. Past it, serve returns and main exits.
	select {
	case err = <-stopped:
		logger.Info("moltgate stopped")
		return err
	case <-time.After(cfg.ShutdownTimeout):
		logger.Error("moltgate: shutdown_timeout passed with work unfinished; exiting anyway",
			"timeout", cfg.ShutdownTimeout.String(), "store", errString(kv.Stuck()))
		return fmt.Errorf("shutdown: not finished within shutdown_timeout (%s)", cfg.ShutdownTimeout)
	}
}

// drainTimeout is the part of shutdown_timeout connections get to finish: the rest (a tenth,
// at most 2s) is for flushing audit and closing the store.
func drainTimeout(total time.Duration) time.Duration {
	return total - min(total/10, 2*time.Second)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func newServer(h http.Handler, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second, // slowloris
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

func serveUntilClosed(srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// reloadOnHangup reloads the policy set at SIGHUP; a broken set is refused and the old one
// keeps deciding.
func reloadOnHangup(ctx context.Context, engine *policies.Engine, reloaded func(source string, err error)) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			reloaded("sighup", engine.Reload(ctx))
		}
	}
}

// policyReloaded returns what follows a reload from source (sighup, watch): a log line and an
// audit event policy.reload either way; on success, open sockets re-decided under the new set.
func policyReloaded(ctx context.Context, engine *policies.Engine, relay *wsrelay.Relay, auditLog *audit.FileLog, logger *slog.Logger) func(string, error) {
	return func(source string, err error) {
		ev := audit.Event{Type: audit.TypePolicyReload, Actor: audit.Actor{Kind: "system", ID: "policies"},
			Outcome: audit.OutcomeSuccess, PolicyRevision: engine.Revision(), Details: map[string]string{"source": source}}
		if b := engine.BundleStatus(); b != nil {
			ev.Details["bundle_revision"] = b.Revision // the bundle in force, after the reload
		}
		addShadowReload(ev.Details, engine)
		if err != nil {
			logger.Error("policy reload refused; the previous policy set stays", "source", source, "err", err)
			ev.Outcome, ev.Reason, ev.Details["error"] = audit.OutcomeDeny, "policy_refused", err.Error()
		} else {
			logger.Info("policy reloaded", "source", source, "policy_revision", engine.Revision())
		}
		if aerr := auditLog.Emit(ctx, ev); aerr != nil {
			logger.Error("policy reload not audited", "err", aerr)
		}
		if err == nil {
			relay.Recheck(ctx, "")
		}
	}
}

func newLogger(c LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func masterKey(cfg *Config, env func(string) string, logger *slog.Logger, stderr io.Writer) (keystore.Secret, error) {
	if cfg.MasterKey != nil {
		text, err := cfg.MasterKey.resolve(env)
		if err != nil {
			return nil, fmt.Errorf("master_key: %w", err)
		}
		return keystore.ParseMasterKey(text)
	}
	path := filepath.Join(cfg.DataDir, devMasterKeyFile)
	key, created, err := keystore.LoadOrCreateDevKey(path)
	if err != nil {
		return nil, err
	}
	devKeyWarning(path, created, logger, stderr)
	return key, nil
}

// devKeyWarning says loudly that the development master key is in use.
func devKeyWarning(path string, created bool, logger *slog.Logger, stderr io.Writer) {
	fmt.Fprintf(stderr, "\n"+
		"  ************************************************************************\n"+
		"  *  WARNING: DEVELOPMENT MASTER KEY in %s\n"+
		"  *  Every tenant secret is encrypted under a key stored in plain text on\n"+
		"  *  this disk. Never use this in production: set keystore.source in the config.\n"+
		"  ************************************************************************\n\n", path)
	logger.Warn("using the development master key: not for production", "path", path, "created", created)
}

// adminTokenSecret resolves the admin token, or creates the development one.
func adminTokenSecret(cfg *Config, env func(string) string, logger *slog.Logger) ([]byte, error) {
	if cfg.AdminToken != nil {
		tok, err := cfg.AdminToken.resolve(env)
		if err != nil {
			return nil, fmt.Errorf("admin_token: %w", err)
		}
		if len(tok) < 32 {
			return nil, errors.New("admin_token: shorter than 32 characters")
		}
		return tok, nil
	}
	path := filepath.Join(cfg.DataDir, devAdminTokenFile)
	tok, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		tok = []byte(hex.EncodeToString(b))
		if err := os.WriteFile(path, append(tok, '\n'), 0o600); err != nil {
			return nil, fmt.Errorf("admin token: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	logger.Warn("using the development admin token file", "path", path)
	return bytes.TrimSpace(tok), nil
}

// redisLogger routes go-redis's internal messages (reconnects, pool errors) into the log.
type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	r.l.LogAttrs(ctx, slog.LevelWarn, "redis: "+fmt.Sprintf(format, v...))
}
