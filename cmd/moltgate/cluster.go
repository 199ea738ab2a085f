package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/proxy"
	"github.com/moltgate/moltgate/proxy/browser"
	"github.com/moltgate/moltgate/proxy/wsrelay"
	"github.com/moltgate/moltgate/registry"
	"github.com/moltgate/moltgate/store"
)

// serveKV is what serve needs of its store, whichever the backend.
type serveKV interface {
	keystore.KV
	Close() error
	Stuck() error
	Collector() prometheus.Collector
}

var (
	_ serveKV = (*store.Bolt)(nil)
	_ serveKV = (*store.Redis)(nil)
)

// openStore opens the configured backend: the bbolt file in data_dir, or the Redis that
// replicas share (then also returned as such, for its change stream).
func openStore(ctx context.Context, cfg *Config, env func(string) string) (serveKV, *store.Redis, error) {
	if cfg.Store.Backend != backendRedis {
		kv, err := store.OpenBoltConfig(filepath.Join(cfg.DataDir, "moltgate.db"), store.BoltConfig{Timeout: cfg.Store.Timeout})
		if errors.Is(err, store.ErrLocked) {
			return nil, nil, fmt.Errorf("data_dir %s: another moltgate holds it (%w): stop that one, or give this one its own data_dir", cfg.DataDir, err)
		}
		return kv, nil, err
	}
	rc, err := cfg.Store.Redis.options(env)
	if err != nil {
		return nil, nil, err
	}
	rc.Timeout = cfg.Store.Timeout
	r, err := store.OpenRedis(ctx, rc)
	if err != nil {
		return nil, nil, err
	}
	return r, r, nil
}

// options resolves the configuration (validated already) into the store's, reading the
// secrets it references.
func (c *StoreRedisConfig) options(env func(string) string) (store.RedisConfig, error) {
	rc := store.RedisConfig{Addr: c.Address, Username: c.Username, DB: c.DB}
	if c.Password != nil {
		pw, err := c.Password.resolve(env)
		if err != nil {
			return rc, fmt.Errorf("store.redis.password: %w", err)
		}
		rc.Password = string(pw)
	}
	if s := c.Sentinel; s != nil {
		rc.Sentinel = &store.SentinelConfig{MasterName: s.MasterName, Addrs: s.Addresses, Replicas: s.Replicas}
		if s.Password != nil {
			pw, err := s.Password.resolve(env)
			if err != nil {
				return rc, fmt.Errorf("store.redis.sentinel.password: %w", err)
			}
			rc.Sentinel.Password = string(pw)
		}
	}
	if t := c.TLS; t != nil {
		rc.TLS = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
		if t.CAFile != "" {
			pem, err := os.ReadFile(t.CAFile)
			if err != nil {
				return rc, fmt.Errorf("store.redis.tls.ca_file: %w", err)
			}
			rc.TLS.RootCAs = x509.NewCertPool()
			if !rc.TLS.RootCAs.AppendCertsFromPEM(pem) {
				return rc, fmt.Errorf("store.redis.tls.ca_file %s: no PEM certificate", t.CAFile)
			}
		}
	}
	return rc, nil
}

// replicaView is this replica's view of the shared store: the copies the request path
// reads (registry, policy data, keystore salts, browser sessions), each told of every change
// on the stream as if this replica had made it, so sockets are re-decided and closed as for
// a local change. Its fields are set before the follower runs.
type replicaView struct {
	gateways *registry.Registry
	keys     *keystore.Keys
	ks       *keystore.Keystore
	rotator  *keystore.Rotator
	browsers *browser.Sessions
	engine   *policies.Engine
	relay    *wsrelay.Relay
	blocks   *proxy.SharedFailures // nil: auth failures not limited
	// revisions and policyChanged: a policy revision promoted or rolled back elsewhere goes
	// live here, and is reported as a reload from source "store".
	revisions     *policies.Revisions
	policyChanged func(source string, err error)
}

// apply brings the view up to one change. Each part ignores the buckets not its own.
func (v *replicaView) apply(ctx context.Context, c store.Change) error {
	v.keys.Changed(ctx, c.Bucket, c.Key)
	// A rotation started elsewhere: a new master version is loaded here, and the job's
	// lease says which replica runs it.
	return errors.Join(v.rotator.Changed(ctx, c.Bucket, c.Key), v.gateways.Changed(ctx, c.Bucket, c.Key),
		v.ks.Changed(c.Bucket, c.Key), v.browsers.Changed(c.Bucket, c.Key), v.blocks.Changed(c.Bucket, c.Key),
		v.policyRevision(ctx, c))
}

// policyRevision loads a promoted or rolled back policy revision; the refusal of one that
// does not load here is reported, not retried (the configured set keeps deciding).
func (v *replicaView) policyRevision(ctx context.Context, c store.Change) error {
	if c.Bucket != policies.RevisionsBucket || c.Key != policies.RevisionsKey {
		return nil
	}
	if changed, err := v.revisions.Load(ctx); changed || err != nil {
		v.policyChanged("store", err)
	}
	return nil
}

// reload reads the whole view again, then re-decides every open socket.
func (v *replicaView) reload(ctx context.Context) error {
	err := errors.Join(v.gateways.Reload(ctx), v.engine.LoadTenantKeys(ctx, v.keys), v.browsers.Reload(), v.blocks.Reload())
	if changed, perr := v.revisions.Load(ctx); changed || perr != nil {
		v.policyChanged("store", perr)
	}
	v.relay.Recheck(ctx, "")
	return err
}

// replicaBucket holds the leases of replica names (audit.replica) on the shared store.
const replicaBucket = "cluster.replicas"

// claimReplica takes the lease of this replica's name on the shared store: two processes
// under one name would interleave one audit chain, so the second is refused at start.
func claimReplica(kv store.LeaseKV, name string, ttl time.Duration) (*store.Lease, error) {
	l, err := (&store.Leases{KV: kv, Bucket: replicaBucket, TTL: ttl}).Acquire(name)
	if errors.Is(err, store.ErrLeaseHeld) {
		return nil, fmt.Errorf("audit.replica %q: a running replica has this name already (%w): give each replica its own "+
			"audit.replica (MOLTGATE_AUDIT_REPLICA), or, if that replica died, start this one again after cluster.lease_ttl (%s)",
			name, err, ttl)
	}
	if err != nil {
		return nil, fmt.Errorf("audit.replica %q: %w", name, err)
	}
	return l, nil
}

// keepReplica renews the name's lease until ctx ends (serve gives it up as it closes the
// store). A renewal the store
// did not answer is tried again at the next tick (the lease is still this process's unless
// another took it); a lease another process took over ends serve with an error.
func keepReplica(ctx context.Context, l *store.Lease, name string, ttl time.Duration, logger *slog.Logger) error {
	t := time.NewTicker(ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			err := l.Renew()
			if errors.Is(err, store.ErrConflict) {
				return fmt.Errorf("audit.replica %q: another process took this replica's name over (its lease lapsed): stopping, "+
					"so that one audit chain has one writer", name)
			}
			if err != nil {
				logger.Warn("cluster: replica name lease not renewed; retried", "replica", name, "err", err)
			}
		}
	}
}
