package cloud

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner"
	"github.com/moltgate/moltgate/provisioner/cloudflare"
	"github.com/moltgate/moltgate/provisioner/fly"
	"github.com/moltgate/moltgate/provisioner/local"
)

type (
	tunnelStep  struct{ d *Driver }
	appStep     struct{ d *Driver }
	volumeStep  struct{ d *Driver }
	ipsStep     struct{ d *Driver }
	secretsStep struct{ d *Driver }
	machineStep struct{ d *Driver }
	dnsStep     struct{ d *Driver }
	accessStep  struct{ d *Driver }
)

func (tunnelStep) Name() string  { return "cloudflare.tunnel" }
func (appStep) Name() string     { return "fly.app" }
func (volumeStep) Name() string  { return "fly.volume" }
func (ipsStep) Name() string     { return "fly.ips" }
func (secretsStep) Name() string { return "fly.secrets" }
func (machineStep) Name() string { return "fly.machine" }
func (dnsStep) Name() string     { return "cloudflare.dns" }
func (accessStep) Name() string  { return "cloudflare.access" }

// Outputs the steps record (ids, never secrets).
const (
	outTunnel         = "cloudflare.tunnel"
	outApp            = "fly.app"
	outVolume         = "fly.volume"
	outSecretsVersion = "fly.secrets_version"
	outSecretsFor     = "fly.secrets_for"
	outMachine        = "fly.machine"
	outImage          = "fly.image"
	outAccessApp      = "cloudflare.access_app"
	outServiceToken   = "cloudflare.service_token"
)

// drifted reports each finding as drift and says whether there was any.
func drifted(r *provisioner.Run, findings []cloudflare.Finding) bool {
	for _, f := range findings {
		r.Drift(f.Resource, f.String())
	}
	return len(findings) > 0
}

// gone reports a resource found missing as drift: a step recorded done made it.
func gone(r *provisioner.Run, kind string, err error) (bool, error) {
	if errors.Is(err, fly.ErrNotFound) || errors.Is(err, cloudflare.ErrNotFound) {
		r.Drift(kind, kind+" gone")
		return false, nil
	}
	return false, err
}

// Check: the tunnel exists, managed remotely, and its ingress sends the gateway's hostname
// to the gateway's loopback port, everything else to a 404.
func (s tunnelStep) Check(ctx context.Context, r *provisioner.Run) (bool, error) {
	f, err := s.d.deps.Cloudflare.CheckTunnel(ctx, r.Spec.ID, s.d.service())
	if err != nil {
		return false, err
	}
	return !drifted(r, f), nil
}

// Ensure makes the tunnel and its ingress.
func (s tunnelStep) Ensure(ctx context.Context, r *provisioner.Run) error {
	cf := s.d.deps.Cloudflare
	t, err := cf.EnsureTunnel(ctx, r.Spec.ID)
	if err != nil {
		return err
	}
	r.SetOutput(outTunnel, t.ID)
	return cf.ConfigureIngress(ctx, r.Spec.ID, "", s.d.service())
}

// Destroy deletes the tunnel: last, once the machine running its connector is gone.
func (s tunnelStep) Destroy(ctx context.Context, r *provisioner.Run) error {
	return s.d.deps.Cloudflare.DestroyTunnel(ctx, r.Spec.ID)
}

// Check: the app is there, in moltgate's organization.
func (s appStep) Check(ctx context.Context, r *provisioner.Run) (bool, error) {
	if _, err := s.d.deps.Fly.App(ctx, r.Spec.ID); err != nil {
		return gone(r, "app", err)
	}
	return true, nil
}

// Ensure makes the app, or adopts it.
func (s appStep) Ensure(ctx context.Context, r *provisioner.Run) error {
	a, err := s.d.deps.Fly.EnsureApp(ctx, r.Spec.ID)
	if err != nil {
		return err
	}
	r.SetOutput(outApp, a.Name)
	return nil
}

// Destroy removes the app and everything in it (machine, volume, IPs, secrets), confirmed
// gone; the later fly steps' Destroy have nothing left of their own.
func (s appStep) Destroy(ctx context.Context, r *provisioner.Run) error {
	return s.d.deps.Fly.Destroy(ctx, r.Spec.ID)
}

// Check: one encrypted data volume.
func (s volumeStep) Check(ctx context.Context, r *provisioner.Run) (bool, error) {
	vols, err := s.d.deps.Fly.Volumes(ctx, r.Spec.ID)
	if err != nil {
		return gone(r, "volume", err)
	}
	if len(vols) != 1 || !vols[0].Encrypted {
		r.Drift("volume", fmt.Sprintf("%d volumes, want one encrypted", len(vols)))
		return false, nil
	}
	return true, nil
}

// Ensure makes the volume (names are not unique on Fly: it keeps one).
func (s volumeStep) Ensure(ctx context.Context, r *provisioner.Run) error {
	v, err := s.d.deps.Fly.EnsureVolume(ctx, r.Spec.ID)
	if err != nil {
		return err
	}
	r.SetOutput(outVolume, v.ID)
	return nil
}

// Destroy: the app's Destroy removes the volume, after the machine that mounts it.
func (volumeStep) Destroy(context.Context, *provisioner.Run) error { return nil }

// Check: one dedicated IPv6 and one shared IPv4.
func (s ipsStep) Check(ctx context.Context, r *provisioner.Run) (bool, error) {
	n, err := s.d.deps.Fly.IPCounts(ctx, r.Spec.ID)
	if err != nil {
		return gone(r, "ips", err)
	}
	if n["v6"] != 1 || n["shared_v4"] != 1 {
		r.Drift("ips", fmt.Sprintf("%d v6 and %d shared_v4, want one of each", n["v6"], n["shared_v4"]))
		return false, nil
	}
	return true, nil
}

// Ensure assigns the addresses.
func (s ipsStep) Ensure(ctx context.Context, r *provisioner.Run) error {
	_, err := s.d.deps.Fly.EnsureIPs(ctx, r.Spec.ID)
	return err
}

// Destroy: the app's Destroy releases the addresses.
func (ipsStep) Destroy(context.Context, *provisioner.Run) error { return nil }

// secretsFor says what the app's secrets must hold, without a secret: the token
// generation, the tunnel, the tenant's active keys (ids and fingerprints).
func secretsFor(r *provisioner.Run) (string, []string, error) {
	keys, err := r.ActiveKeys()
	if err != nil {
		return "", nil, fmt.Errorf("active keys: %w", err)
	}
	fp, err := r.KeysFingerprint()
	if err != nil {
		return "", nil, fmt.Errorf("active keys: %w", err)
	}
	names := []string{fly.SecretGatewayToken, SecretTunnelToken}
	for _, k := range keys {
		names = append(names, local.KeyEnv(k.Provider))
	}
	slices.Sort(names)
	return strings.Join([]string{"token:" + strconv.FormatUint(r.Spec.TokenGeneration, 10), "tunnel:" + r.Output(outTunnel), fp}, ","), names, nil
}

// Check: the app's secrets were set for the current token, tunnel and keys, and are all
// still there.
func (s secretsStep) Check(ctx context.Context, r *provisioner.Run) (bool, error) {
	want, names, err := secretsFor(r)
	if err != nil || r.Output(outSecretsFor) != want {
		return false, err
	}
	have, err := s.d.deps.Fly.SecretNames(ctx, r.Spec.ID)
	if err != nil {
		return gone(r, "secrets", err)
	}
	if !slices.Equal(have, names) {
		r.Drift("secrets", fmt.Sprintf("secrets %v, want %v", have, names))
		return false, nil
	}
	return true, nil
}

// Ensure sets the app's secrets to exactly the gateway token, the tunnel's connector token
// (fetched again: it is kept nowhere) and the tenant's provider keys, and records the
// secrets version the machine must boot with.
func (s secretsStep) Ensure(ctx context.Context, r *provisioner.Run) error {
	tok := r.Token()
	if tok == nil {
		return errors.New("no token")
	}
	want, _, err := secretsFor(r)
	if err != nil {
		return err
	}
	tunnelToken, err := s.d.deps.Cloudflare.TunnelToken(ctx, r.Spec.ID)
	if err != nil {
		return err
	}
	defer clear(tunnelToken)
	keys, err := r.OpenKeys(ctx)
	if err != nil {
		return fmt.Errorf("open keys: %w", err)
	}
	values := map[string]keystore.Secret{fly.SecretGatewayToken: tok, SecretTunnelToken: tunnelToken}
	for _, k := range keys {
		values[local.KeyEnv(k.Provider)] = k.Secret
	}
	v, err := s.d.deps.Fly.SetSecrets(ctx, r.Spec.ID, values)
	if err != nil {
		return err
	}
	r.SetOutput(outSecretsVersion, strconv.FormatUint(v, 10))
	r.SetOutput(outSecretsFor, want)
	return nil
}

// Destroy: the app's Destroy removes its secrets.
func (secretsStep) Destroy(context.Context, *provisioner.Run) error { return nil }

// Check: the machine runs the spec's image with the current secrets, started.
func (s machineStep) Check(ctx context.Context, r *provisioner.Run) (bool, error) {
	m, err := s.d.deps.Fly.Machine(ctx, r.Spec.ID)
	if err != nil {
		return gone(r, "machine", err)
	}
	want, _ := strconv.ParseUint(r.Output(outSecretsVersion), 10, 64)
	switch {
	case m.Image != r.Spec.Image && r.Output(outImage) == r.Spec.Image:
		// The spec did not change: someone else did.
		r.Drift("image", fmt.Sprintf("machine %s runs %s, want %s", m.ID, m.Image, r.Spec.Image))
		return false, nil
	case m.Image != r.Spec.Image || m.SecretsVersion < want:
		return false, nil
	case m.State != "started":
		r.Drift("machine", fmt.Sprintf("machine %s is %s", m.ID, m.State))
		return false, nil
	}
	return true, nil
}

// Ensure launches the machine, or brings it to the image and secrets version (a restart),
// and waits until it is healthy.
func (s machineStep) Ensure(ctx context.Context, r *provisioner.Run) error {
	v, _ := strconv.ParseUint(r.Output(outSecretsVersion), 10, 64)
	m, err := s.d.deps.Fly.EnsureMachine(ctx, r.Spec.ID, fly.MachineSpec{Image: r.Spec.Image, SecretsVersion: v})
	if err != nil {
		return err
	}
	r.SetOutput(outMachine, m.ID)
	r.SetOutput(outImage, r.Spec.Image)
	return nil
}

// Destroy: the app's Destroy removes the machine first.
func (machineStep) Destroy(context.Context, *provisioner.Run) error { return nil }

// Check: the hostname is one proxied CNAME to the tunnel, and the registry is given it.
func (s dnsStep) Check(ctx context.Context, r *provisioner.Run) (bool, error) {
	f, err := s.d.deps.Cloudflare.CheckDNS(ctx, r.Spec.ID)
	if err != nil {
		return gone(r, "tunnel", err)
	}
	host, _ := s.d.deps.Cloudflare.Hostname(r.Spec.ID)
	return !drifted(r, f) && r.Upstream() == "https://"+host, nil
}

// Ensure points the hostname at the tunnel (a record that is not moltgate's is left alone
// and reported) and makes it the gateway's upstream.
func (s dnsStep) Ensure(ctx context.Context, r *provisioner.Run) error {
	rec, err := s.d.deps.Cloudflare.EnsureDNS(ctx, r.Spec.ID)
	if err != nil {
		return err
	}
	r.SetUpstream("https://" + rec.Name)
	return nil
}

// Destroy deletes the record, if it is moltgate's.
func (s dnsStep) Destroy(ctx context.Context, r *provisioner.Run) error {
	return s.d.deps.Cloudflare.DestroyDNS(ctx, r.Spec.ID)
}

// Check: the hostname's Access application admits only moltgate's current service token.
func (s accessStep) Check(ctx context.Context, r *provisioner.Run) (bool, error) {
	tok, err := s.d.storedToken()
	if err != nil || tok == nil || r.Output(outServiceToken) != tok.ID {
		return false, err
	}
	f, err := s.d.deps.Cloudflare.CheckAccess(ctx, r.Spec.ID, tok.ID)
	if err != nil {
		return false, err
	}
	return !drifted(r, f), nil
}

// Ensure makes moltgate's service token if there is none, then the hostname's Access
// application and its policy admitting only that token.
func (s accessStep) Ensure(ctx context.Context, r *provisioner.Run) error {
	id, err := s.d.serviceToken(ctx)
	if err != nil {
		return err
	}
	a, err := s.d.deps.Cloudflare.EnsureAccess(ctx, r.Spec.ID, id)
	if err != nil {
		return err
	}
	r.SetOutput(outAccessApp, a.AppID)
	r.SetOutput(outServiceToken, id)
	return nil
}

// Destroy deletes the Access application and its policy; the service token stays.
func (s accessStep) Destroy(ctx context.Context, r *provisioner.Run) error {
	return s.d.deps.Cloudflare.DestroyAccess(ctx, r.Spec.ID)
}
