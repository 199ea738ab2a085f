package provisioner_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner"
	"github.com/moltgate/moltgate/provisioner/fly"
	"github.com/moltgate/moltgate/provisioner/provisionertest"
)

// keysDriver is the fly driver's secrets and machine steps as the provisioner README maps
// them onto the fly package: secrets records the active keys' fingerprint and the secrets
// version it set, and fails its Check when the keys change; machine fails its Check until
// the machine runs that version.
type keysDriver struct{ d *fly.Driver }

func (k keysDriver) Steps() []provisioner.Step {
	return []provisioner.Step{keysSecrets(k), keysMachine(k)}
}

type (
	keysSecrets keysDriver
	keysMachine keysDriver
)

const (
	outKeys    = "test.fly.secrets.keys"
	outVersion = "test.fly.secrets.version"
)

func (keysSecrets) Name() string { return "test.fly.secrets" }

func (keysSecrets) Check(_ context.Context, r *provisioner.Run) (bool, error) {
	fp, err := r.KeysFingerprint()
	return err == nil && r.Output(outKeys) == fp, err
}

func (s keysSecrets) Ensure(ctx context.Context, r *provisioner.Run) error {
	id := r.Spec.ID
	if _, err := s.d.EnsureApp(ctx, id); err != nil {
		return err
	}
	if _, err := s.d.EnsureVolume(ctx, id); err != nil {
		return err
	}
	fp, err := r.KeysFingerprint()
	if err != nil {
		return err
	}
	keys, err := r.OpenKeys(ctx)
	if err != nil {
		return err
	}
	values := map[string]keystore.Secret{fly.SecretGatewayToken: r.Token()}
	for _, k := range keys {
		values[strings.ToUpper(k.Provider)+"_API_KEY"] = k.Secret
	}
	v, err := s.d.SetSecrets(ctx, id, values)
	if err != nil {
		return err
	}
	r.SetOutput(outKeys, fp)
	r.SetOutput(outVersion, strconv.FormatUint(v, 10))
	return nil
}

func (s keysSecrets) Destroy(ctx context.Context, r *provisioner.Run) error {
	return s.d.Destroy(ctx, r.Spec.ID)
}

func (keysMachine) Name() string { return "test.fly.machine" }

func (s keysMachine) Check(ctx context.Context, r *provisioner.Run) (bool, error) {
	m, err := s.d.Machine(ctx, r.Spec.ID)
	if err != nil {
		return false, nil
	}
	return m.Image == r.Spec.Image && strconv.FormatUint(m.SecretsVersion, 10) == r.Output(outVersion), nil
}

func (s keysMachine) Ensure(ctx context.Context, r *provisioner.Run) error {
	v, _ := strconv.ParseUint(r.Output(outVersion), 10, 64)
	if _, err := s.d.EnsureMachine(ctx, r.Spec.ID, fly.MachineSpec{Image: r.Spec.Image, SecretsVersion: v}); err != nil {
		return err
	}
	r.SetUpstream("http://" + r.Spec.ID + ".gateway.test:18789")
	return nil
}

func (keysMachine) Destroy(context.Context, *provisioner.Run) error { return nil }

type acceptKeys struct{}

func (acceptKeys) Verify(context.Context, string, keystore.Kind, keystore.Secret) error { return nil }

// Issue 14: a new or re-activated provider key reaches the running gateway: the keystore's
// subscription wakes the gateway's pass (not the resync: it is an hour away), the secrets
// step runs again, the app secret is updated, and the machine is updated to the new secrets
// version.
func TestNewKeyReachesTheRunningGateway(t *testing.T) {
	e := newFlyEnv(t)
	keys, err := keystore.NewKeys(keystore.KeysConfig{Keystore: e.ks, KV: e.kv, Audit: e.audit, Verifier: acceptKeys{}})
	if err != nil {
		t.Fatal(err)
	}
	opener, err := keystore.NewOpener(keys, audit.Actor{Kind: "system", ID: "provisioner"}, keystore.ReasonProvision, e.audit)
	if err != nil {
		t.Fatal(err)
	}
	p := e.process(func(c *provisioner.Config, d *provisioner.Deps) {
		c.Drivers = map[string]provisioner.Driver{"fly": keysDriver{e.d}}
		c.ResyncInterval = time.Hour
		d.Keys, d.Opener = keys, opener
	})
	keys.Subscribe(func(_ context.Context, tenant string) { p.WakeTenant(tenant) }) // as moltgate serve does
	add := func(provider, secret string) keystore.APIKey {
		t.Helper()
		k, err := keys.Add(t.Context(), keystore.AddRequest{Tenant: "acme", Provider: provider, Secret: keystore.Secret(secret)})
		if err == nil {
			_, err = keys.Verify(t.Context(), audit.Actor{Kind: "admin_token", ID: "t"}, "acme", k.ID)
		}
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	activate := func(k keystore.APIKey) {
		t.Helper()
		if _, err := keys.Activate(t.Context(), "acme", k.ID); err != nil {
			t.Fatal(err)
		}
	}
	const (
		first  = "sk-ant-first-0123456789abcdef"
		second = "sk-ant-second-0123456789abcdef"
		openai = "sk-openai-0123456789abcdef"
	)
	k1 := add("anthropic", first)
	activate(k1)
	provisionertest.Provisioned(t, p, provisioner.Spec{ID: "keys-1", Tenant: "acme", Owner: "user_alice", Driver: "fly", Image: flyImageA})

	// delivered waits until the app's secrets hold want and the machine runs their version.
	delivered := func(want map[string]string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, version := e.fake.SecretValues("mg-keys-1")
			m := e.machine(t, "keys-1")
			mv, _ := e.fake.MachineSecretsVersion("mg-keys-1", m.ID)
			ok := mv == version && m.State == "started"
			for k, v := range want {
				ok = ok && got[k] == v
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("secrets %v at version %d, machine at %d (%s); want the values of %v delivered", keysOf(got), version, mv, m.State, keysOf(want))
			}
			time.Sleep(20 * time.Millisecond) // polling until a deadline, not synchronising
		}
	}
	delivered(map[string]string{"ANTHROPIC_API_KEY": first})

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	// A new provider's key, a new key for a provider, and an older key re-activated: each
	// reaches the machine.
	before := e.machine(t, "keys-1").InstanceID
	activate(add("openai", openai))
	delivered(map[string]string{"ANTHROPIC_API_KEY": first, "OPENAI_API_KEY": openai})
	if e.machine(t, "keys-1").InstanceID == before {
		t.Fatal("the machine was not updated for the new secrets")
	}
	activate(add("anthropic", second))
	delivered(map[string]string{"ANTHROPIC_API_KEY": second, "OPENAI_API_KEY": openai})
	activate(k1)
	delivered(map[string]string{"ANTHROPIC_API_KEY": first, "OPENAI_API_KEY": openai})
}

func keysOf(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
