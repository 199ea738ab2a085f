package local_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner"
	"github.com/moltgate/moltgate/provisioner/local"
	"github.com/moltgate/moltgate/provisioner/provisionertest"
	"github.com/moltgate/moltgate/registry"
	"github.com/moltgate/moltgate/store"
)

// lenv is what several moltgate "processes" share: the store, registry, keystore, audit
// sink, clock and the folder of gateways. Each process is a provisioner with a local driver
// of its own, running the fake OpenClaw (fake_test.go).
type lenv struct {
	t     *testing.T
	kv    *store.Bolt
	reg   *registry.Registry
	keys  *keystore.Keys
	ks    *keystore.Keystore
	audit *provisionertest.Audit
	clock *testenv.Clock
	bin   string
	dir   string
	n     int
}

type acceptAll struct{}

func (acceptAll) Verify(context.Context, string, keystore.Kind, keystore.Secret) error { return nil }

func newLenv(t *testing.T) *lenv {
	t.Helper()
	dir := t.TempDir()
	st := provisionertest.NewStores(t)
	kv, ks, reg := st.KV, st.Keystore, st.Registry
	rec := &provisionertest.Audit{}
	keys, err := keystore.NewKeys(keystore.KeysConfig{Keystore: ks, KV: kv, Audit: rec, Verifier: acceptAll{}})
	if err != nil {
		t.Fatal(err)
	}
	// The fake OpenClaw install: this test binary as "openclaw", with a "node" beside it.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	os.Mkdir(bin, 0o700)
	if err := os.Symlink(exe, filepath.Join(bin, "openclaw")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(bin, "node"), nil, 0o700)
	return &lenv{t: t, kv: kv, reg: reg, keys: keys, ks: ks, audit: rec, clock: testenv.NewClock(time.Now()),
		bin: filepath.Join(bin, "openclaw"), dir: filepath.Join(dir, "gateways")}
}

// process starts another moltgate "process": a provisioner and a local driver that know
// nothing of what earlier ones started.
func (e *lenv) process(killAt ...func(string) error) (*provisioner.Provisioner, *local.Driver) {
	e.t.Helper()
	e.n++
	d, err := local.New(local.Config{OpenClaw: e.bin, Dir: e.dir, StartTimeout: 30 * time.Second, StopTimeout: 5 * time.Second,
		OpenClawConfig: map[string]any{"fake": map[string]any{"startMs": 150}}}, slog.New(slog.DiscardHandler))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { d.Close(context.Background()) })
	opener, err := keystore.NewOpener(e.keys, audit.Actor{Kind: "system", ID: "provisioner"}, keystore.ReasonProvision, e.audit)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg := provisioner.Config{Drivers: map[string]provisioner.Driver{"local": d}, Holder: "process-" + strconv.Itoa(e.n)}
	if len(killAt) > 0 {
		cfg.KillAt = killAt[0]
	}
	p, err := provisioner.New(cfg,
		provisioner.Deps{KV: e.kv, Sealer: e.ks, Registry: e.reg, Audit: e.audit, Keys: e.keys, Opener: opener,
			Logger: slog.New(slog.DiscardHandler), Now: e.clock.Now})
	if err != nil {
		e.t.Fatal(err)
	}
	return p, d
}

func (e *lenv) addKey(tenant, provider, secret string) keystore.APIKey {
	e.t.Helper()
	k, err := e.keys.Add(e.t.Context(), keystore.AddRequest{Tenant: tenant, Provider: provider, Secret: keystore.Secret(secret)})
	if err == nil {
		_, err = e.keys.Verify(e.t.Context(), audit.Actor{Kind: "admin_token", ID: "t"}, tenant, k.ID)
	}
	if err == nil {
		k, err = e.keys.Activate(e.t.Context(), tenant, k.ID)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return k
}

// gateway checks that id runs as exactly one process in its folder, registered at its port
// with the token it accepts, and returns its pid and upstream.
func (e *lenv) gateway(t *testing.T, id string) (int, string) {
	t.Helper()
	leader, others := local.FindProcs(filepath.Join(e.dir, id))
	if leader == 0 || len(others) > 0 {
		t.Fatalf("processes in %s's folder: leader %d, others %v; want exactly one", id, leader, others)
	}
	entry, ok := e.reg.Lookup(id)
	if !ok {
		t.Fatalf("%s is not registered", id)
	}
	if code := get(t, entry.Upstream+"/control-ui-config.json", string(entry.Token)); code != 200 {
		t.Fatalf("the gateway answers %d to the registry's token, want 200", code)
	}
	return leader, entry.Upstream
}

func get(t *testing.T, url, token string) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func spec(id string) provisioner.Spec {
	return provisioner.Spec{ID: id, Tenant: "acme", Owner: "user_alice"}
}

var localPlan = []string{"token", "local.dir", "local.process", "local.ready", "register"}

// Issue 14: a moltgate killed right after any step of a local gateway's creation, at any
// moment of it, and another moltgate resuming (its driver knows no process: it finds the
// one working in the gateway's folder), ends with exactly one gateway process, registered
// with the token it accepts.
func TestLocalCrashAndResumeAfterEveryStep(t *testing.T) {
	t.Parallel()
	provisionertest.EachKillMoment(t, localPlan, func(t *testing.T, step, moment string) {
		e := newLenv(t)
		point := "ensure " + step + ": " + moment
		k := &provisionertest.KillSwitch{}
		k.Arm(point)
		p1, _ := e.process(k.KillAt)
		if _, _, err := p1.Apply(t.Context(), spec("gw1")); err != nil {
			t.Fatal(err)
		}
		if err := p1.Reconcile(t.Context(), "gw1"); !errors.Is(err, provisionertest.ErrKilled) {
			t.Fatalf("got %v, want the crash at %q", err, point)
		}
		before, _ := local.FindProcs(filepath.Join(e.dir, "gw1"))
		e.clock.Advance(time.Minute) // the dead process's lease runs out
		p2, _ := e.process()
		provisionertest.Converge(t, p2, "gw1")
		if pid, _ := e.gateway(t, "gw1"); before != 0 && pid != before {
			t.Errorf("the gateway process %d was replaced by %d: want it adopted", before, pid)
		}
		if st, _ := p2.Get("gw1"); st.Phase != provisioner.PhaseReady {
			t.Errorf("phase %q, want ready", st.Phase)
		}
	})
}

// Issue 14: the tenant's active provider key reaches the gateway's environment, and nothing
// of moltgate's does; opening it is audited for the provisioner; a newly activated key
// restarts the gateway with it.
func TestLocalKeysReachTheGatewayAlone(t *testing.T) {
	e := newLenv(t)
	t.Setenv("MOLTGATE_ADMIN_TOKEN", "must-not-reach-a-gateway")
	e.addKey("acme", "openai", "sk-first-key-0123456789")
	p, _ := e.process()
	provisionertest.Provisioned(t, p, spec("gw1"))
	pid, up := e.gateway(t, "gw1")
	env := fakeEnv(t, up)
	if env["OPENAI_API_KEY"] != hash("sk-first-key-0123456789") {
		t.Errorf("OPENAI_API_KEY in the gateway: %q, want the tenant's key", env["OPENAI_API_KEY"])
	}
	for name := range env {
		switch name {
		case "PATH", "HOME", "TMPDIR", "LANG", "OPENCLAW_STATE_DIR", "OPENCLAW_CONFIG_PATH", "OPENAI_API_KEY", "NO_COLOR", "FORCE_COLOR",
			"OPENCLAW_DISABLE_BONJOUR", "OPENCLAW_NO_RESPAWN", "OPENCLAW_SKIP_CHANNELS", "OPENCLAW_NO_AUTO_UPDATE",
			"OPENCLAW_EXEC_SHELL_SNAPSHOT", "OPENCLAW_OFFLINE":
		default:
			t.Errorf("the gateway's environment holds %s", name)
		}
	}
	opened := 0
	for _, ev := range e.audit.Events() {
		if ev.Type == audit.TypeSecretOpen && ev.Tenant == "acme" && ev.Details["purpose"] == string(keystore.ReasonProvision) {
			opened++
		}
	}
	if opened != 1 {
		t.Errorf("secret.open events for the provisioner: %d, want 1", opened)
	}
	e.addKey("acme", "openai", "sk-second-key-9876543210")
	provisionertest.Converge(t, p, "gw1")
	pid2, up2 := e.gateway(t, "gw1")
	if pid2 == pid {
		t.Error("the gateway was not restarted with the new key")
	}
	if up2 != up {
		t.Errorf("the restarted gateway moved from %s to %s", up, up2)
	}
	if got := fakeEnv(t, up2)["OPENAI_API_KEY"]; got != hash("sk-second-key-9876543210") {
		t.Error("the restarted gateway does not hold the new key")
	}
}

// Issue 14: rotating a local gateway's token changes its config in place (no restart):
// from then the gateway takes only the new token, which the registry sends.
func TestLocalRotateTokenInPlace(t *testing.T) {
	t.Parallel()
	e := newLenv(t)
	p, _ := e.process()
	provisionertest.Provisioned(t, p, spec("gw1"))
	pid, up := e.gateway(t, "gw1")
	old, _ := e.reg.Lookup("gw1")
	if _, err := p.RotateToken(t.Context(), "gw1"); err != nil {
		t.Fatal(err)
	}
	provisionertest.Converge(t, p, "gw1")
	pid2, up2 := e.gateway(t, "gw1")
	if pid2 != pid || up2 != up {
		t.Errorf("rotation restarted or moved the gateway: pid %d→%d, %s→%s", pid, pid2, up, up2)
	}
	if code := get(t, up+"/control-ui-config.json", string(old.Token)); code != 401 {
		t.Errorf("the old token: %d, want 401", code)
	}
}

// Issue 14: a gateway process that dies is started again by the reconciler (Run), on its
// port and folder, without anyone asking.
func TestLocalRestartsADeadGateway(t *testing.T) {
	t.Parallel()
	e := newLenv(t)
	p, _ := e.process()
	provisionertest.Provisioned(t, p, spec("gw1"))
	pid, up := e.gateway(t, "gw1")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, "the gateway to run again", 30*time.Second, func() bool {
		leader, _ := local.FindProcs(filepath.Join(e.dir, "gw1"))
		return leader != 0 && leader != pid && get(t, up+"/readyz", "") == 200
	})
	if _, up2 := e.gateway(t, "gw1"); up2 != up {
		t.Errorf("restarted at %s, want %s", up2, up)
	}
}

// Issue 14: destroy stops the process and removes the folder and the registry record, even
// when the moltgate doing it dies after any destroy step, at any moment.
func TestLocalDestroyAfterCrashHalfway(t *testing.T) {
	t.Parallel()
	provisionertest.EachKillMoment(t, localPlan, func(t *testing.T, step, moment string) {
		e := newLenv(t)
		point := "destroy " + step + ": " + moment
		k := &provisionertest.KillSwitch{}
		k.Arm(point)
		p1, _ := e.process(k.KillAt)
		provisionertest.Provisioned(t, p1, spec("gw1"))
		pid, _ := e.gateway(t, "gw1")
		if _, err := p1.Destroy(t.Context(), "gw1"); err != nil {
			t.Fatal(err)
		}
		if err := p1.Reconcile(t.Context(), "gw1"); !errors.Is(err, provisionertest.ErrKilled) {
			t.Fatalf("got %v, want the crash at %q", err, point)
		}
		e.clock.Advance(time.Minute)
		p2, _ := e.process()
		provisionertest.Converge(t, p2, "gw1")
		if leader, others := local.FindProcs(filepath.Join(e.dir, "gw1")); leader != 0 || len(others) > 0 {
			t.Errorf("processes left: %d %v", leader, others)
		}
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("process %d still runs", pid)
		}
		if _, err := os.Stat(filepath.Join(e.dir, "gw1")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the folder is left: %v", err)
		}
		if _, ok := e.reg.Lookup("gw1"); ok {
			t.Error("the registry record is left")
		}
		if _, err := p2.Get("gw1"); !errors.Is(err, provisioner.ErrNotFound) {
			t.Errorf("not forgotten: %v", err)
		}
	})
}

func fakeEnv(t *testing.T, up string) map[string]string {
	t.Helper()
	resp, err := http.Get(up + "/_fake/env")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var env map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		t.Fatal(err)
	}
	return env
}

func hash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// Issue 14: when moltgate stops it stops its gateways (Close); the next moltgate starts the
// ones that should exist again, on their folder and port.
func TestLocalStartsGatewaysAgainAfterAStop(t *testing.T) {
	t.Parallel()
	e := newLenv(t)
	p1, d1 := e.process()
	provisionertest.Provisioned(t, p1, spec("gw1"))
	pid, up := e.gateway(t, "gw1")
	if err := d1.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if leader, others := local.FindProcs(filepath.Join(e.dir, "gw1")); leader != 0 || len(others) > 0 || syscall.Kill(pid, 0) == nil {
		t.Fatalf("after Close: processes %d %v (pid %d)", leader, others, pid)
	}
	p2, _ := e.process()
	provisionertest.Converge(t, p2, "gw1")
	pid2, up2 := e.gateway(t, "gw1")
	if pid2 == pid || up2 != up {
		t.Errorf("after the restart: pid %d (was %d), upstream %s (was %s); want a new process at the same address", pid2, pid, up2, up)
	}
}
