package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/proxy"
	"github.com/moltgate/moltgate/store"
)

// AuditConfig configures the audit pipeline: spool, sinks, checkpoints and archive.
type AuditConfig struct {
	// Replica names this instance's chain and Redis stream. Default: the host name.
	Replica string `yaml:"replica"`
	// SpoolMaxBytes bounds the unarchived events kept locally; at it, requests are refused.
	// Default 1073741824 (1 GiB).
	SpoolMaxBytes int64 `yaml:"spool_max_bytes"`
	// Durable makes each event wait for its (batched) fsync before the request completes.
	// Default off: events are written before the request completes and fsynced every
	// sync_interval.
	Durable bool `yaml:"durable"`
	// SyncInterval is the fsync batch interval. Default 100ms.
	SyncInterval time.Duration `yaml:"sync_interval"`
	// CheckpointEvery signs the chain head after this many events. Default 10000.
	CheckpointEvery int `yaml:"checkpoint_every"`
	// CheckpointInterval signs the chain head at least this often while events come. Default 1m.
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	// Redis, when set, ships events to Redis Streams (one per replica). Default: off, the spool
	// is archived directly.
	Redis *AuditRedisConfig `yaml:"redis"`
	// Archive is the long-term store.
	Archive AuditArchiveConfig `yaml:"archive"`
}

// AuditRedisConfig locates Redis: addr, or sentinel.
type AuditRedisConfig struct {
	// Addr is host:port. Give it or sentinel, not both.
	Addr string `yaml:"addr"`
	// Sentinel finds the master through Redis Sentinel and follows it across failovers, as
	// store.redis.sentinel does (replicas is not used here).
	Sentinel *RedisSentinelConfig `yaml:"sentinel"`
	// Password, if Redis needs one.
	Password *SecretRef `yaml:"password"`
	// DB number. Default 0.
	DB int `yaml:"db"`
}

// AuditArchiveConfig configures the archive and its worker.
type AuditArchiveConfig struct {
	// Dir holds the archive. Default <data_dir>/audit-archive.
	Dir string `yaml:"dir"`
	// Interval between archiving rounds. Default 1m.
	Interval time.Duration `yaml:"interval"`
	// Retention keeps archived events this long. Default 7 years; never below 1 year.
	Retention time.Duration `yaml:"retention"`
	// Disabled stops this replica's archive worker (with Redis, another replica or
	// `moltgate audit archive` archives). Default: the worker runs.
	Disabled bool `yaml:"disabled"`
}

func (a *AuditConfig) setDefaults(dataDir string) {
	if a.Replica == "" {
		a.Replica, _ = os.Hostname()
		if a.Replica == "" {
			a.Replica = "local"
		}
	}
	if a.SpoolMaxBytes == 0 {
		a.SpoolMaxBytes = 1 << 30
	}
	if a.SyncInterval == 0 {
		a.SyncInterval = 100 * time.Millisecond
	}
	if a.CheckpointEvery == 0 {
		a.CheckpointEvery = 10000
	}
	if a.CheckpointInterval == 0 {
		a.CheckpointInterval = time.Minute
	}
	if a.Archive.Dir == "" {
		a.Archive.Dir = filepath.Join(dataDir, "audit-archive")
	}
	if a.Archive.Interval == 0 {
		a.Archive.Interval = time.Minute
	}
	if a.Archive.Retention == 0 {
		a.Archive.Retention = audit.DefaultRetention
	}
}

func (a *AuditConfig) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("audit.%s: "+format, append([]any{key}, args...)...))
	}
	if strings.ContainsAny(a.Replica, " /\\:*?") {
		bad("replica", "%q: no spaces, slashes, colons or wildcards", a.Replica)
	}
	if a.SpoolMaxBytes < 1<<20 {
		bad("spool_max_bytes", "%d: want at least 1048576", a.SpoolMaxBytes)
	}
	for key, v := range map[string]int64{"sync_interval": int64(a.SyncInterval), "checkpoint_interval": int64(a.CheckpointInterval),
		"archive.interval": int64(a.Archive.Interval), "checkpoint_every": int64(a.CheckpointEvery)} {
		if v < 0 {
			bad(key, "must not be negative")
		}
	}
	if a.Archive.Retention < audit.MinRetention {
		bad("archive.retention", "%v: below the minimum of %v", a.Archive.Retention, audit.MinRetention)
	}
	if r := a.Redis; r != nil {
		errs = append(errs, r.validate()...)
	}
	return errs
}

// auditStack is the running audit pipeline of serve.
type auditStack struct {
	log  *audit.FileLog
	run  func(ctx context.Context) error
	rdb  *redis.Client
	arch *audit.Archive
}

// openAudit opens the spool, its sinks and archive, and loads (or creates) the checkpoint
// signing key, sealed in the keystore.
func openAudit(cfg *Config, env func(string) string, kv keystore.KV, ks *keystore.Keystore, logger *slog.Logger, reg prometheus.Registerer) (*auditStack, error) {
	ac := cfg.Audit
	key, err := checkpointKey(kv, ks)
	if err != nil {
		return nil, err
	}
	pub := audit.PublicKeyHex(key.Public().(ed25519.PublicKey))
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "audit-checkpoint.pub"), []byte(pub+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	st := &auditStack{}
	var arch *audit.Archive
	if !ac.Archive.Disabled {
		if arch, err = audit.OpenArchive(audit.ArchiveConfig{Dir: ac.Archive.Dir, Retention: ac.Archive.Retention, Metrics: reg}, logger); err != nil {
			return nil, err
		}
	}
	var sinks []audit.Sink
	if r := ac.Redis; r != nil {
		if st.rdb, err = r.client(env); err != nil {
			return nil, err
		}
		sinks = append(sinks, audit.NewRedisSink(st.rdb, ac.Replica))
	} else if arch != nil {
		sinks = append(sinks, arch.Sink(ac.Replica, 0, ac.Archive.Interval))
	}
	archiveDir := ""
	if arch != nil {
		archiveDir = arch.Dir() // read back by the admin API's GET /v1/audit
	}
	st.log, err = audit.OpenFile(audit.FileConfig{Dir: filepath.Join(cfg.DataDir, "audit"), SpoolMaxBytes: ac.SpoolMaxBytes, ArchiveDir: archiveDir,
		Replica: ac.Replica, Durable: ac.Durable, Signer: key, CheckpointEvery: ac.CheckpointEvery,
		CheckpointInterval: ac.CheckpointInterval, Sinks: sinks, Metrics: reg}, logger)
	if err != nil {
		return nil, err
	}
	logger.Info("audit ready", "replica", ac.Replica, "redis", ac.Redis != nil, "archive", !ac.Archive.Disabled,
		"checkpoint_key", pub)
	st.arch = arch
	st.run = func(ctx context.Context) error {
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() error { return st.log.Run(ctx, ac.SyncInterval) })
		if arch != nil {
			g.Go(func() error { arch.RunRetention(gctx, 24*time.Hour, st.log.Emit); return nil })
			if st.rdb != nil {
				d := audit.NewDrainer(st.rdb, arch, ac.Replica, logger)
				g.Go(func() error { d.Run(gctx, ac.Archive.Interval); return nil })
			}
		}
		err := g.Wait()
		if st.rdb != nil {
			st.rdb.Close()
		}
		return err
	}
	return st, nil
}

// Where the checkpoint key is kept: sealed by the keystore for the platform itself.
const (
	ckTenant  = "moltgate"
	ckRecord  = "audit/checkpoint-key"
	ckPurpose = "audit-checkpoint"
	ckBucket  = "audit"
)

// checkpointKey opens the audit checkpoint signing key, or makes it. Replicas sharing a
// store starting at once agree on one key: the first to store it wins (compare-and-swap).
func checkpointKey(kv keystore.KV, ks *keystore.Keystore) (ed25519.PrivateKey, error) {
	sealed, err := kv.Get(ckBucket, ckRecord)
	if err == nil {
		seed, err := ks.Open(ckTenant, ckRecord, ckPurpose, sealed)
		if err != nil {
			return nil, fmt.Errorf("audit: checkpoint key: %w", err)
		}
		defer clear(seed)
		if len(seed) != ed25519.SeedSize {
			return nil, errors.New("audit: checkpoint key: bad length")
		}
		return ed25519.NewKeyFromSeed(seed), nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("audit: checkpoint key: %w", err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	sealed, err = ks.Seal(ckTenant, ckRecord, ckPurpose, key.Seed())
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint key: %w", err)
	}
	if err := kv.Swap(ckBucket, ckRecord, nil, sealed); errors.Is(err, store.ErrConflict) {
		return checkpointKey(kv, ks) // another replica made it first: use that one
	} else if err != nil {
		return nil, fmt.Errorf("audit: checkpoint key: %w", err)
	}
	return key, nil
}

// auditGate refuses requests while the audit spool cannot take events: moltgate does not
// serve unaudited (fail closed).
func auditGate(next http.Handler, ready func() error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ready() != nil {
			proxy.Refuse(w, http.StatusServiceUnavailable, "audit_unavailable")
			return
		}
		next.ServeHTTP(w, r)
	})
}

const auditUsage = `usage:
  moltgate audit verify (--files DIR | --archive DIR | --redis ADDR | --config FILE) [--stream KEY] [--pubkey HEX|FILE] [--redis-password-file FILE]
                                   without --stream: every replica's stream
  moltgate audit archive (--redis ADDR | --config FILE) --dir DIR [--consumer NAME] [--redis-password-file FILE]    drain every stream into the archive once
  moltgate audit tail [--files DIR] [--archive DIR] [--redis ADDR | --config FILE] [-n N]    with Redis: every replica's chain, merged in time
  moltgate audit query [--archive DIR] [--files DIR] [--redis ADDR | --config FILE] [--tenant T] [--gateway G] [--type TYPE] [--since RFC3339] [--until RFC3339]
  moltgate audit pubkey [--data DIR]

--config FILE reaches the Redis of serve's configuration (audit.redis: its address or, through
Redis Sentinel, the current master; its password and db) instead of --redis.
`

// auditCommand is the operators' CLI over audit files, streams and archives. It reads them
// directly (no admin API): run it where the data is.
func auditCommand(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, auditUsage)
		return usageError{"audit: no subcommand"}
	}
	fs := newFlags("audit "+args[0], "usage: moltgate audit "+args[0]+" … (moltgate audit help: every subcommand)", stderr)
	files := fs.String("files", "", "spool directory (<data_dir>/audit)")
	archive := fs.String("archive", "", "archive directory")
	dir := fs.String("dir", "", "archive directory (archive)")
	redisAddr := fs.String("redis", "", "Redis host:port")
	redisPassword := fs.String("redis-password-file", "", "file holding the Redis password (never on the command line)")
	configPath := fs.String("config", "", "serve's configuration file: its audit.redis instead of --redis")
	stream := fs.String("stream", "", "stream key, e.g. moltgate:audit:<replica>")
	pubkey := fs.String("pubkey", "", "trusted checkpoint key: hex, or a file holding it")
	consumer := fs.String("consumer", "", "consumer name in the archive group (default: host name)")
	n := fs.Int("n", 20, "events (tail)")
	tenant := fs.String("tenant", "", "tenant (query)")
	gateway := fs.String("gateway", "", "gateway (query)")
	typ := fs.String("type", "", "event type (query)")
	since := fs.String("since", "", "RFC 3339 time (query)")
	until := fs.String("until", "", "RFC 3339 time (query)")
	data := fs.String("data", "./data", "data directory (pubkey)")
	if err := fs.parse(args[1:]); err != nil {
		return err
	}
	// connect reaches the audit stream's Redis, as --redis or --config names it; nil when
	// neither does.
	redisName := *redisAddr
	connect := func() (*redis.Client, error) { return cliRedis(*redisAddr, *redisPassword) }
	switch {
	case *configPath != "" && (*redisAddr != "" || *redisPassword != ""):
		return usageError{"audit: --config or --redis (with --redis-password-file), not both"}
	case *configPath != "":
		cfg, err := loadConfig(*configPath, env)
		if err != nil {
			return err
		}
		if cfg.Audit.Redis == nil {
			return fmt.Errorf("audit: --config %s: no audit.redis to read the streams from", *configPath)
		}
		redisName = "audit.redis of " + *configPath
		connect = func() (*redis.Client, error) { return cfg.Audit.Redis.client(env) }
	case *redisAddr == "":
		connect = nil
	}
	switch args[0] {
	case "verify":
		opts := audit.VerifyOptions{}
		if *pubkey != "" {
			text := *pubkey
			if b, err := os.ReadFile(text); err == nil {
				text = strings.TrimSpace(string(b))
			}
			k, err := audit.ParsePublicKey(text)
			if err != nil {
				return err
			}
			opts.PublicKey = k
		}
		switch {
		case *files != "":
			rep, err := audit.VerifyFiles(*files, opts)
			if err != nil {
				return err
			}
			printReport(stdout, *files, rep)
		case *archive != "":
			reps, err := audit.VerifyArchive(*archive, opts)
			if err != nil {
				return err
			}
			for r, rep := range reps {
				printReport(stdout, r, rep)
			}
		case connect != nil:
			rdb, err := connect()
			if err != nil {
				return err
			}
			defer rdb.Close()
			// Without --stream, every replica's chain (replicas sharing one Redis).
			streams := []string{*stream}
			if *stream == "" {
				if streams, err = audit.Streams(ctx, rdb); err != nil {
					return err
				}
				if len(streams) == 0 {
					return fmt.Errorf("audit verify: no stream %s* on %s", audit.StreamPrefix, redisName)
				}
			}
			for _, key := range streams {
				rep, err := audit.VerifyStream(ctx, rdb, key, opts)
				if err != nil {
					return err
				}
				printReport(stdout, key, rep)
			}
		default:
			return usageError{"usage: moltgate audit verify (--files DIR | --archive DIR | --redis ADDR | --config FILE) [--stream KEY]"}
		}
		return nil
	case "archive":
		if connect == nil || *dir == "" {
			return usageError{"usage: moltgate audit archive (--redis ADDR | --config FILE) --dir DIR"}
		}
		logger := slog.New(slog.NewTextHandler(stderr, nil))
		arch, err := audit.OpenArchive(audit.ArchiveConfig{Dir: *dir}, logger)
		if err != nil {
			return err
		}
		name := *consumer
		if name == "" {
			name, _ = os.Hostname()
		}
		rdb, err := connect()
		if err != nil {
			return err
		}
		defer rdb.Close()
		got, err := audit.NewDrainer(rdb, arch, name, logger).DrainOnce(ctx)
		fmt.Fprintf(stdout, "archived %d events\n", got)
		return err
	case "tail", "query":
		rd := audit.Reader{SpoolDir: *files, ArchiveDir: *archive}
		if connect != nil {
			// Every replica's stream: what the replicas sharing this Redis wrote and the
			// archive does not hold yet.
			rdb, err := connect()
			if err != nil {
				return err
			}
			defer rdb.Close()
			rd.Redis = rdb
		}
		var q audit.Query
		if args[0] == "query" {
			q = audit.Query{Tenant: *tenant, Gateway: *gateway, Type: *typ}
			for _, t := range []struct {
				s   string
				dst *time.Time
			}{{*since, &q.Since}, {*until, &q.Until}} {
				if t.s != "" {
					v, err := time.Parse(time.RFC3339, t.s)
					if err != nil {
						return usageError{"audit query: --since/--until: want RFC 3339"}
					}
					*t.dst = v
				}
			}
		} else if rd.SpoolDir == "" && rd.Redis == nil && rd.ArchiveDir == "" {
			rd.SpoolDir = filepath.Join(*data, "audit")
		}
		tail := newTail(*n) // the last n of every replica's chain, merged in time
		enc := json.NewEncoder(stdout)
		err := rd.QueryContext(ctx, q, func(e audit.Event) bool {
			if args[0] == "tail" {
				tail.Add(e)
				return true
			}
			return enc.Encode(e) == nil
		})
		for _, e := range tail.Last() {
			enc.Encode(e)
		}
		return err
	case "pubkey":
		b, err := os.ReadFile(filepath.Join(*data, "audit-checkpoint.pub"))
		if err != nil {
			return fmt.Errorf("audit pubkey: %w (written by serve at start)", err)
		}
		_, err = stdout.Write(b)
		return err
	}
	fmt.Fprint(stderr, auditUsage)
	return usageError{fmt.Sprintf("audit: unknown subcommand %q", args[0])}
}

// cliRedis connects the CLI to Redis, with the password read from passwordFile if given.
func cliRedis(addr, passwordFile string) (*redis.Client, error) {
	opts := &redis.Options{Addr: addr}
	if passwordFile != "" {
		b, err := os.ReadFile(passwordFile)
		if err != nil {
			return nil, fmt.Errorf("audit: --redis-password-file: %w", err)
		}
		opts.Password = strings.TrimSpace(string(b))
	}
	return redis.NewClient(opts), nil
}

func printReport(w io.Writer, name string, r audit.Report) {
	fmt.Fprintf(w, "%s: ok: %d events (seq %d-%d), %d checkpoints, %d after the last checkpoint\n",
		name, r.Events, r.First, r.Last, r.Checkpoints, r.Unanchored)
}
