package fly

import (
	"context"
	"errors"
	"fmt"
	"github.com/moltgate/moltgate/provisioner/retry"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	fly "github.com/superfly/fly-go"
	"github.com/superfly/fly-go/flaps"
)

// MachineSpec is what a gateway's machine runs.
type MachineSpec struct {
	// Image is the gateway image, pinned by digest: repository[:tag]@sha256:<64 hex>.
	Image string
	// SecretsVersion is the app secrets version the machine must boot with at least (what
	// SetSecrets returned); 0 means any.
	SecretsVersion uint64
}

// Machine is a gateway's machine as the API reports it.
type Machine struct {
	ID         string
	Name       string
	State      string
	Region     string
	Image      string // the image of its config, as given to the driver
	InstanceID string // changes with every update
	// SecretsVersion is the secrets version the driver last started it with at least.
	SecretsVersion uint64
}

// Upgrade is the result of UpgradeMachine.
type Upgrade struct {
	Machine Machine
	// PreviousImage is the image the machine ran before, to roll back to; it is set even
	// when the upgrade failed.
	PreviousImage string
}

// EnsureMachine makes sure the gateway's machine exists, runs spec with the gateway bound
// to loopback and the data volume mounted, and is healthy. A missing machine is launched
// under a lease; a drifted one (image, secrets version, size, environment, mounts, checks)
// is updated, and a stopped one started, under a lease refreshed while the driver works.
// EnsureApp, EnsureVolume and SetSecrets come first.
func (d *Driver) EnsureMachine(ctx context.Context, gatewayID string, spec MachineSpec) (Machine, error) {
	m, _, err := d.converge(ctx, gatewayID, spec, false)
	return m, err
}

// UpgradeMachine rolls the gateway's existing machine to spec (a new pinned image, and the
// secrets version) and waits until it is healthy. It reports the image the machine ran
// before, even on failure, so the caller can roll back with another UpgradeMachine.
func (d *Driver) UpgradeMachine(ctx context.Context, gatewayID string, spec MachineSpec) (Upgrade, error) {
	m, prev, err := d.converge(ctx, gatewayID, spec, true)
	return Upgrade{Machine: m, PreviousImage: prev}, err
}

// Machine returns the gateway's machine, ErrNotFound if it has none: for drift checks.
func (d *Driver) Machine(ctx context.Context, gatewayID string) (Machine, error) {
	app, err := d.AppName(gatewayID)
	if err != nil {
		return Machine{}, err
	}
	m, err := d.findMachine(ctx, app)
	if err != nil {
		return Machine{}, err
	}
	return machineOf(m), nil
}

// converge brings the gateway's machine to spec and waits for it to be healthy. It returns
// the image the machine had before (empty when it launched one).
func (d *Driver) converge(ctx context.Context, gatewayID string, spec MachineSpec, mustExist bool) (Machine, string, error) {
	if err := ValidateImage(spec.Image); err != nil {
		return Machine{}, "", err
	}
	app, err := d.AppName(gatewayID)
	if err != nil {
		return Machine{}, "", err
	}
	m, err := d.findMachine(ctx, app)
	switch {
	case errors.Is(err, ErrNotFound) && !mustExist:
		vol, err := d.findVolume(ctx, gatewayID, app)
		if err != nil {
			return Machine{}, "", fmt.Errorf("fly: ensure machine of %q needs its volume: %w", app, err)
		}
		m, err = d.launch(ctx, gatewayID, app, d.machineConfig(gatewayID, spec, vol.ID, 0), spec)
		if err == nil || !errors.Is(err, errAdopt) {
			return machineOf(m), "", err
		}
		// It was there after all: converge it as found.
	case err != nil:
		return Machine{}, "", err
	}
	prev := machineOf(m).Image
	vol, err := d.mountedVolume(ctx, gatewayID, app, m)
	if err != nil {
		return machineOf(m), prev, err
	}
	want := d.machineConfig(gatewayID, spec, vol, secretsVersionOf(m))
	m, err = d.update(ctx, gatewayID, app, m, want, spec)
	return machineOf(m), prev, err
}

// errAdopt: a launch found the machine already there.
var errAdopt = errors.New("machine exists")

// launch creates the machine under a lease and waits for it to be healthy. A launch whose
// answer is lost, or refused because the name exists, returns the machine found by name
// with errAdopt.
func (d *Driver) launch(ctx context.Context, gatewayID, app string, cfg *fly.MachineConfig, spec MachineSpec) (*fly.Machine, error) {
	in := fly.LaunchMachineInput{
		Name:     machineName,
		Region:   d.cfg.Region,
		Config:   cfg,
		LeaseTTL: d.leaseSeconds(),
	}
	if spec.SecretsVersion > 0 {
		in.MinSecretsVersion = &spec.SecretsVersion
	}
	var m *fly.Machine
	err := d.call(ctx, callOpts{kind: create}, func(ctx context.Context) (err error) {
		m, err = d.client.Launch(ctx, app, in)
		return err
	})
	if err != nil {
		if !errors.Is(err, ErrUnknownResult) && statusOf(err) != http.StatusConflict {
			return nil, fmt.Errorf("fly: launch machine in %q: %w", app, err)
		}
		found, lerr := d.findMachine(ctx, app)
		switch {
		case lerr == nil:
			d.log.LogAttrs(ctx, slog.LevelInfo, "fly: adopted machine", slog.String("gateway", gatewayID), slog.String("machine", found.ID))
			return found, errAdopt
		case errors.Is(lerr, ErrNotFound):
			return nil, fmt.Errorf("fly: launch machine in %q: %w", app, err)
		}
		return nil, lerr
	}
	d.log.LogAttrs(ctx, slog.LevelInfo, "fly: launched machine", slog.String("gateway", gatewayID),
		slog.String("machine", m.ID), slog.String("image", cfg.Image))
	if m.LeaseNonce == "" {
		return d.healthy(ctx, app, m, m.InstanceID)
	}
	work, release := d.hold(ctx, app, m.ID, m.LeaseNonce)
	defer release()
	m, err = d.healthy(work, app, m, m.InstanceID)
	return m, leaseCause(work, err)
}

// update brings an existing machine to want: an update when it drifted, a start when it
// rests stopped, under a held lease; then it waits for it to be healthy.
func (d *Driver) update(ctx context.Context, gatewayID, app string, m *fly.Machine, want *fly.MachineConfig, spec MachineSpec) (*fly.Machine, error) {
	drifted := drift(m.GetConfig(), want)
	// "created" is not idle: a launched machine passes through it on its way to started.
	idle := m.State == fly.MachineStateStopped || m.State == fly.MachineStateSuspended || m.State == "failed"
	if !drifted && !idle {
		return d.healthy(ctx, app, m, m.InstanceID)
	}
	nonce, err := d.acquireLease(ctx, app, m.ID)
	if err != nil {
		return m, err
	}
	work, release := d.hold(ctx, app, m.ID, nonce)
	defer release()
	if drifted {
		in := fly.LaunchMachineInput{ID: m.ID, Name: m.Name, Region: m.Region, Config: want}
		if spec.SecretsVersion > 0 {
			in.MinSecretsVersion = &spec.SecretsVersion
		}
		var out *fly.Machine
		err := d.call(work, callOpts{}, func(ctx context.Context) (err error) {
			out, err = d.client.Update(ctx, app, in, nonce)
			return err
		})
		if err != nil {
			return m, leaseCause(work, fmt.Errorf("fly: update machine %s in %q: %w", m.ID, app, err))
		}
		d.log.LogAttrs(ctx, slog.LevelInfo, "fly: updated machine", slog.String("gateway", gatewayID),
			slog.String("machine", m.ID), slog.String("image", want.Image))
		out, err = d.healthy(work, app, out, out.InstanceID)
		return out, leaseCause(work, err)
	}
	err = d.call(work, callOpts{}, func(ctx context.Context) error {
		_, err := d.client.Start(ctx, app, m.ID, nonce)
		return err
	})
	if err != nil {
		return m, leaseCause(work, fmt.Errorf("fly: start machine %s in %q: %w", m.ID, app, err))
	}
	d.log.LogAttrs(ctx, slog.LevelInfo, "fly: started machine", slog.String("gateway", gatewayID), slog.String("machine", m.ID))
	m, err = d.healthy(work, app, m, "")
	return m, leaseCause(work, err)
}

// findMachine returns the app's live machine named machineName, ErrNotFound if none.
func (d *Driver) findMachine(ctx context.Context, app string) (*fly.Machine, error) {
	var all []*fly.Machine
	err := d.call(ctx, callOpts{}, func(ctx context.Context) (err error) {
		all, err = d.client.List(ctx, app, "")
		return err
	})
	if err != nil {
		if statusOf(err) == http.StatusNotFound {
			return nil, fmt.Errorf("fly: app %q: %w", app, ErrNotFound)
		}
		return nil, fmt.Errorf("fly: list machines of %q: %w", app, err)
	}
	for _, m := range all {
		if m.Name == machineName && m.IsActive() {
			return m, nil
		}
	}
	return nil, fmt.Errorf("fly: machine %q in %q: %w", machineName, app, ErrNotFound)
}

// mountedVolume is the volume the machine mounts, else the gateway's volume.
func (d *Driver) mountedVolume(ctx context.Context, gatewayID, app string, m *fly.Machine) (string, error) {
	if c := m.GetConfig(); c != nil && len(c.Mounts) > 0 && c.Mounts[0].Volume != "" {
		return c.Mounts[0].Volume, nil
	}
	v, err := d.findVolume(ctx, gatewayID, app)
	if err != nil {
		return "", fmt.Errorf("fly: machine of %q needs its volume: %w", app, err)
	}
	return v.ID, nil
}

// machineConfig is the gateway machine's desired config. The gateway binds loopback and
// the machine declares no services: Fly's proxy has no way in, only the tunnel inside the
// VM does. The secrets version recorded never goes down.
func (d *Driver) machineConfig(gatewayID string, spec MachineSpec, volumeID string, haveSecrets uint64) *fly.MachineConfig {
	env := maps.Clone(d.cfg.Env)
	if env == nil {
		env = map[string]string{}
	}
	env[EnvBind] = "loopback"
	env[EnvPort] = strconv.Itoa(d.cfg.GatewayPort)
	env[EnvGatewayID] = gatewayID
	guest := d.cfg.Guest
	return &fly.MachineConfig{
		Image: spec.Image,
		Env:   env,
		Guest: &guest,
		Metadata: map[string]string{
			metaGateway:        gatewayID,
			metaSecretsVersion: strconv.FormatUint(max(spec.SecretsVersion, haveSecrets), 10),
		},
		Mounts:  []fly.MachineMount{{Volume: volumeID, Path: d.cfg.MountPath, Name: volumeName}},
		Restart: &fly.MachineRestart{Policy: fly.MachineRestartPolicyAlways},
		Checks:  maps.Clone(d.cfg.Checks),
	}
}

// drift reports whether have differs from want in anything the driver sets.
func drift(have, want *fly.MachineConfig) bool {
	if have == nil {
		return true
	}
	guest := func(g *fly.MachineGuest) string {
		if g == nil {
			return ""
		}
		return fmt.Sprintf("%s/%d/%d", g.CPUKind, g.CPUs, g.MemoryMB)
	}
	mount := func(c *fly.MachineConfig) string {
		if len(c.Mounts) != 1 {
			return ""
		}
		return c.Mounts[0].Volume + ":" + c.Mounts[0].Path
	}
	restart := func(c *fly.MachineConfig) fly.MachineRestartPolicy {
		if c.Restart == nil {
			return ""
		}
		return c.Restart.Policy
	}
	return have.Image != want.Image ||
		!maps.Equal(have.Env, want.Env) ||
		guest(have.Guest) != guest(want.Guest) ||
		mount(have) != mount(want) ||
		restart(have) != restart(want) ||
		len(have.Services) > 0 ||
		have.Metadata[metaGateway] != want.Metadata[metaGateway] ||
		have.Metadata[metaSecretsVersion] != want.Metadata[metaSecretsVersion] ||
		!slices.Equal(slices.Sorted(maps.Keys(have.Checks)), slices.Sorted(maps.Keys(want.Checks)))
}

func secretsVersionOf(m *fly.Machine) uint64 {
	c := m.GetConfig()
	if c == nil {
		return 0
	}
	v, _ := strconv.ParseUint(c.Metadata[metaSecretsVersion], 10, 64)
	return v
}

func machineOf(m *fly.Machine) Machine {
	if m == nil {
		return Machine{}
	}
	out := Machine{ID: m.ID, Name: m.Name, State: m.State, Region: m.Region, InstanceID: m.InstanceID, SecretsVersion: secretsVersionOf(m)}
	if c := m.GetConfig(); c != nil {
		out.Image = c.Image
	}
	return out
}

// healthy waits for m to be healthy and reports it started.
func (d *Driver) healthy(ctx context.Context, app string, m *fly.Machine, instance string) (*fly.Machine, error) {
	if err := d.waitHealthy(ctx, app, m.ID, instance); err != nil {
		return m, err
	}
	started := *m
	started.State = fly.MachineStateStarted
	return &started, nil
}

// waitHealthy waits, within StartTimeout, for the machine to be started (at instance, if
// given) and every check to pass. Fly's wait answers 408 after at most 60 s: it waits
// again, unless the machine has failed.
func (d *Driver) waitHealthy(ctx context.Context, app, id, instance string) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.StartTimeout)
	defer cancel()
	opts := []flaps.WaitOption{flaps.WithWaitStates(fly.MachineStateStarted), flaps.WithWaitTimeout(d.cfg.WaitTimeout)}
	if instance != "" {
		opts = append(opts, flaps.WithWaitVersion(instance))
	}
	for {
		err := d.call(ctx, callOpts{timeout: d.cfg.WaitTimeout + d.cfg.RequestTimeout}, func(ctx context.Context) error {
			return d.client.Wait(ctx, app, id, opts...)
		})
		if err == nil {
			break
		}
		if statusOf(err) != http.StatusRequestTimeout {
			return d.notHealthy(ctx, app, id, err)
		}
		if m, gerr := d.getMachine(ctx, app, id); gerr == nil && (m.State == "failed" || !m.IsActive()) {
			return fmt.Errorf("%w: machine %s in %q is %s", ErrMachineFailed, id, app, m.State)
		}
	}
	if len(d.cfg.Checks) == 0 {
		return nil
	}
	for attempt := 1; ; attempt++ {
		m, err := d.getMachine(ctx, app, id)
		if err != nil {
			return d.notHealthy(ctx, app, id, err)
		}
		if passing(m, d.cfg.Checks) {
			return nil
		}
		if err := retry.Sleep(ctx, retry.Backoff(attempt)); err != nil {
			return d.notHealthy(ctx, app, id, err)
		}
	}
}

// notHealthy names a wait that ended: StartTimeout passing is ErrMachineFailed.
func (d *Driver) notHealthy(ctx context.Context, app, id string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
		return fmt.Errorf("%w: machine %s in %q not healthy within %s", ErrMachineFailed, id, app, d.cfg.StartTimeout)
	}
	return fmt.Errorf("fly: wait for machine %s in %q: %w", id, app, err)
}

func passing(m *fly.Machine, checks map[string]fly.MachineCheck) bool {
	for name := range checks {
		i := slices.IndexFunc(m.Checks, func(c *fly.MachineCheckStatus) bool { return c.Name == name })
		if i < 0 || m.Checks[i].Status != fly.Passing {
			return false
		}
	}
	return true
}

func (d *Driver) getMachine(ctx context.Context, app, id string) (*fly.Machine, error) {
	var m *fly.Machine
	err := d.call(ctx, callOpts{}, func(ctx context.Context) (err error) {
		m, err = d.client.Get(ctx, app, id)
		return err
	})
	return m, err
}

// leaseSeconds is LeaseTTL in whole seconds, rounded up.
func (d *Driver) leaseSeconds() int {
	return int((d.cfg.LeaseTTL + time.Second - 1) / time.Second)
}

// acquireLease takes the machine's lease, waiting up to LeaseWait for another holder to
// let go (flaps retries a refused acquire by itself).
func (d *Driver) acquireLease(ctx context.Context, app, id string) (string, error) {
	n := &note{}
	lctx, cancel := context.WithTimeout(context.WithValue(ctx, noteKey{}, n), d.cfg.LeaseWait)
	defer cancel()
	ttl := d.leaseSeconds()
	l, err := d.client.AcquireLease(lctx, app, id, &ttl)
	if err == nil && l.Data != nil && l.Data.Nonce != "" {
		return l.Data.Nonce, nil
	}
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	switch status, _ := n.get(); status {
	case http.StatusConflict:
		return "", fmt.Errorf("%w: machine %s in %q, for %s", ErrLeaseHeld, id, app, d.cfg.LeaseWait)
	case http.StatusNotFound:
		return "", fmt.Errorf("fly: lease machine %s in %q: %w", id, app, ErrNotFound)
	case http.StatusTooManyRequests:
		return "", fmt.Errorf("fly: lease machine %s in %q: %w", id, app, ErrRateLimited)
	}
	if err == nil {
		err = errors.New("answer without a nonce")
	}
	return "", fmt.Errorf("fly: lease machine %s in %q: %w", id, app, err)
}

// hold keeps the lease with nonce refreshed until release is called. The returned context
// is cancelled, with cause ErrLeaseLost, if a refresh fails: work under it stops rather
// than go on without the lease. release stops refreshing and releases the lease.
func (d *Driver) hold(ctx context.Context, app, id, nonce string) (context.Context, func()) {
	work, cancel := context.WithCancelCause(ctx)
	stop, done := make(chan struct{}), make(chan struct{})
	ttl := d.leaseSeconds()
	go func() {
		defer close(done)
		tick := time.NewTicker(d.cfg.LeaseTTL / 3)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-work.Done():
				return
			case <-tick.C:
			}
			err := d.call(work, callOpts{}, func(ctx context.Context) error {
				_, err := d.client.RefreshLease(ctx, app, id, &ttl, nonce)
				return err
			})
			if err != nil && work.Err() == nil {
				d.log.LogAttrs(ctx, slog.LevelWarn, "fly: lease refresh failed", slog.String("app", app),
					slog.String("machine", id), slog.Int("status", statusOf(err)))
				cancel(ErrLeaseLost)
				return
			}
		}
	}()
	return work, func() {
		close(stop)
		<-done
		lost := context.Cause(work) == ErrLeaseLost
		cancel(nil)
		if lost {
			return
		}
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.RequestTimeout)
		defer rcancel()
		err := d.client.ReleaseLease(rctx, app, id, nonce)
		if err != nil && !errors.Is(err, flaps.ErrFlapsNotFound) {
			d.log.LogAttrs(ctx, slog.LevelWarn, "fly: lease release failed; it expires by itself",
				slog.String("app", app), slog.String("machine", id))
		}
	}
}

// leaseCause turns an error from work under a lost lease into ErrLeaseLost.
func leaseCause(work context.Context, err error) error {
	if err != nil && context.Cause(work) == ErrLeaseLost {
		return fmt.Errorf("%w: %w", ErrLeaseLost, err)
	}
	return err
}
