// Package local is the provisioner's embedded driver: each gateway is a real OpenClaw
// gateway process on a free loopback port, with its own folder (state, config, logs) under
// the data directory, its own token, and the tenant's active provider keys in its
// environment. It needs no cloud account: the pinned Node and OpenClaw that `make run` and
// `make test` install into .cache/openclaw are enough.
//
// Invariants:
//   - A gateway's deterministic name is its folder, <Dir>/<id>: its process is found as the
//     process group leader working in that folder, whoever started it, so a gateway started
//     by a pass that died is adopted, never started twice (OpenClaw's own state lock refuses a
//     second one on the same state directory too).
//   - A gateway process gets no environment of moltgate's but PATH: no admin token, cloud
//     credential or other tenant's key can leak into a tenant's agent tools.
//   - A process this driver started dies with moltgate (SIGKILL on the parent's death, Linux)
//     and is stopped (SIGTERM, then SIGKILL to its group) on destroy and at Close; the next
//     moltgate starts the gateways that should exist again, on their state.
package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/moltgate/moltgate/provisioner"
)

// Config configures the local driver.
type Config struct {
	// OpenClaw is the openclaw executable of the pinned install
	// (.cache/openclaw/node_modules/.bin/openclaw); the node it runs on must be in the same
	// folder, which goes first on the gateway's PATH. Required.
	OpenClaw string
	// Dir holds one folder per gateway, <Dir>/<id>. Required.
	Dir string
	// Path is the PATH a gateway runs with, after OpenClaw's folder. Default
	// /usr/local/bin:/usr/bin:/bin.
	Path string
	// StartTimeout bounds the wait for a started gateway to answer /readyz. Default 2m (a
	// start takes 10–30 s on two busy cores).
	StartTimeout time.Duration
	// StopTimeout is how long a stopping gateway gets after SIGTERM before SIGKILL. Default 10s.
	StopTimeout time.Duration
	// OpenClawConfig is merged under every gateway's generated openclaw.json: model providers
	// (with "${OPENAI_API_KEY}"-style references to the keys in the environment), agent
	// defaults. What the driver sets itself (gateway port, bind, auth; update checks; the
	// model catalog refresh; logging) wins over it.
	OpenClawConfig map[string]any
}

// Driver is the local driver. It is safe for concurrent use.
type Driver struct {
	cfg    Config
	logger *slog.Logger

	mu    sync.Mutex
	procs map[string]*proc // gateway id → its process, as far as this driver knows
	wake  func(id string)
}

var idPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// New returns the local driver. OpenClaw need not be installed yet: a gateway's
// local.process step fails, saying how to install it, until it is (see Installed).
func New(cfg Config, logger *slog.Logger) (*Driver, error) {
	if cfg.OpenClaw == "" || cfg.Dir == "" || logger == nil {
		return nil, errors.New("local: OpenClaw, Dir and a logger are required")
	}
	if cfg.Path == "" {
		cfg.Path = "/usr/local/bin:/usr/bin:/bin"
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 2 * time.Minute
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	// Absolute: a gateway process starts in its own folder, where a relative path means
	// something else.
	var err error
	if cfg.OpenClaw, err = filepath.Abs(cfg.OpenClaw); err != nil {
		return nil, fmt.Errorf("local: openclaw: %w", err)
	}
	if cfg.Dir, err = filepath.Abs(cfg.Dir); err != nil {
		return nil, fmt.Errorf("local: dir: %w", err)
	}
	dir := cfg.Dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	return &Driver{cfg: cfg, logger: logger, procs: map[string]*proc{}, wake: func(string) {}}, nil
}

// Installed reports whether openclaw is an OpenClaw executable with node beside it.
func Installed(openclaw string) error {
	for _, p := range []string{openclaw, filepath.Join(filepath.Dir(openclaw), "node")} {
		if fi, err := os.Stat(p); err != nil || fi.IsDir() {
			return fmt.Errorf("local: OpenClaw is not installed at %s (make run installs the pinned Node and OpenClaw into .cache/openclaw; or set provisioner.local.openclaw_bin)", openclaw)
		}
	}
	return nil
}

// Steps are local.dir (the gateway's folder), local.process (its OpenClaw process, with its
// token and keys) and local.ready (/readyz and /startupz answer 200).
func (d *Driver) Steps() []provisioner.Step {
	return []provisioner.Step{dirStep{d}, processStep{d}, readyStep{d}}
}

// SetWake implements provisioner.Waker: a gateway process that dies after it was ready
// wakes the reconciler, whose next pass starts it again.
func (d *Driver) SetWake(wake func(id string)) {
	d.mu.Lock()
	d.wake = wake
	d.mu.Unlock()
}

// CheckSpec implements provisioner.SpecChecker: the id names a folder, so it must be the
// DNS label the registry asks for anyway.
func (d *Driver) CheckSpec(s provisioner.Spec) error {
	if !idPattern.MatchString(s.ID) {
		return fmt.Errorf("id %q: want a DNS label", s.ID)
	}
	return nil
}

// Close stops every gateway process this driver knows of, and waits for them (up to ctx).
func (d *Driver) Close(ctx context.Context) error {
	d.mu.Lock()
	procs := make([]*proc, 0, len(d.procs))
	for _, p := range d.procs {
		procs = append(procs, p)
	}
	d.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(procs))
	for i, p := range procs {
		wg.Go(func() { errs[i] = d.stop(ctx, p) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// dir is gateway id's folder: its deterministic name.
func (d *Driver) dir(id string) string { return filepath.Join(d.cfg.Dir, id) }
