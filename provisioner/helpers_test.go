package provisioner_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner"
	"github.com/moltgate/moltgate/provisioner/provisionertest"
	"github.com/moltgate/moltgate/registry"
	"github.com/moltgate/moltgate/store"
)

// world is a fake cloud in memory: the resources the fake driver's steps make, with their
// names, faults to inject, and counts of what was created. Its "vm" resources answer HTTP
// (a real httptest server) and accept only the token they hold, as a gateway does.
type world struct {
	t       *testing.T
	latency time.Duration

	mu        sync.Mutex
	resources []*resource
	creates   int
	faults    map[string][]string // step → faults to inject, in turn
	active    map[string]int      // gateway → steps running now
	maxActive int                 // the most steps at once on one gateway
	// busy are the gateways a step runs on now; maxBusy the most at once.
	busy, maxBusy int
	srv           *httptest.Server
	// release ends the "wait" faults when closed.
	release chan struct{}
}

type resource struct {
	kind, name string
	token      string // vm: the token it accepts
}

// Kinds of fake resources, one per fake step. Names of "net" and "vm" are unique (a second
// create conflicts, as a Fly app or machine name does); names of "vol" are not (a second
// create makes a duplicate, as Fly volumes do), so only a lookup keeps them single.
var kinds = []string{"net", "vol", "vm"}

func newWorld(t *testing.T) *world {
	w := &world{t: t, faults: map[string][]string{}, active: map[string]int{}, release: make(chan struct{})}
	w.srv = httptest.NewServer(http.HandlerFunc(w.serve))
	t.Cleanup(w.srv.Close)
	return w
}

// serve answers as the vm named by the path's first segment: 200 with the request body for
// its token, 401 for any other.
func (w *world) serve(rw http.ResponseWriter, r *http.Request) {
	name, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	w.mu.Lock()
	var tok string
	for _, res := range w.resources {
		if res.kind == "vm" && res.name == name {
			tok = res.token
		}
	}
	w.mu.Unlock()
	if tok == "" || r.Header.Get("Authorization") != "Bearer "+tok {
		http.Error(rw, "token_mismatch", http.StatusUnauthorized)
		return
	}
	body, _ := io.ReadAll(r.Body)
	rw.Write(body)
}

func (w *world) inject(step string, faults ...string) {
	w.mu.Lock()
	w.faults[step] = append(w.faults[step], faults...)
	w.mu.Unlock()
}

func (w *world) fault(step string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	f := w.faults[step]
	if len(f) == 0 {
		return ""
	}
	w.faults[step] = f[1:]
	return f[0]
}

func (w *world) find(kind, name string) []*resource {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []*resource
	for _, r := range w.resources {
		if r.kind == kind && r.name == name {
			out = append(out, r)
		}
	}
	return out
}

// count returns how many resources of each kind gateway id has.
func (w *world) count(id string) map[string]int {
	out := map[string]int{}
	for _, k := range kinds {
		out[k] = len(w.find(k, k+"-"+id))
	}
	return out
}

func (w *world) running(id string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.active[id]
}

func (w *world) total() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.resources)
}

var errFake500 = errors.New("fake cloud: 500 internal error")

// fakeDriver's steps: net, vol, vm, each a lookup-first ensure of one resource.
type fakeDriver struct {
	w      *world
	cancel func() // set by tests that kill the pass from inside a step
}

func (d *fakeDriver) Steps() []provisioner.Step {
	return []provisioner.Step{fakeStep{d, "net"}, fakeStep{d, "vol"}, fakeStep{d, "vm"}}
}

type fakeStep struct {
	d    *fakeDriver
	kind string
}

func (s fakeStep) Name() string { return "fake." + s.kind }

func (s fakeStep) enter(id string) func() {
	w := s.d.w
	w.mu.Lock()
	w.active[id]++
	w.maxActive = max(w.maxActive, w.active[id])
	if w.active[id] == 1 {
		w.busy++
		w.maxBusy = max(w.maxBusy, w.busy)
	}
	w.mu.Unlock()
	if w.latency > 0 {
		time.Sleep(w.latency)
	}
	return func() {
		w.mu.Lock()
		w.active[id]--
		if w.active[id] == 0 {
			w.busy--
		}
		w.mu.Unlock()
	}
}

func (s fakeStep) Check(_ context.Context, r *provisioner.Run) (bool, error) {
	got := s.d.w.find(s.kind, s.kind+"-"+r.Spec.ID)
	if len(got) != 1 {
		return false, nil
	}
	if s.kind == "vm" {
		return got[0].token == string(r.Token()) && r.Upstream() == s.d.w.srv.URL+"/vm-"+r.Spec.ID, nil
	}
	return true, nil
}

func (s fakeStep) Ensure(ctx context.Context, r *provisioner.Run) error {
	defer s.enter(r.Spec.ID)()
	w, name := s.d.w, s.kind+"-"+r.Spec.ID
	fault := w.fault(s.Name())
	switch fault {
	case "error-before":
		return errFake500
	case "hang": // a call that never answers: only the context ends it
		<-ctx.Done()
	case "wait": // a call that answers once the test says so (a stalled pass)
		select {
		case <-w.release:
		case <-ctx.Done():
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	found := w.find(s.kind, name)
	if len(found) == 0 {
		w.mu.Lock()
		w.resources = append(w.resources, &resource{kind: s.kind, name: name})
		w.creates++
		w.mu.Unlock()
		found = w.find(s.kind, name)
	}
	if s.kind == "vm" {
		w.mu.Lock()
		found[0].token = string(r.Token())
		w.mu.Unlock()
		r.SetUpstream(w.srv.URL + "/vm-" + r.Spec.ID)
	}
	r.SetOutput(s.kind+".name", name)
	switch fault {
	case "error-after":
		return errFake500 // made, and reported failed: the SDK's "500 after create"
	case "cancel-after":
		s.d.cancel() // the process is stopped right after the step acted
	}
	return nil
}

func (s fakeStep) Destroy(ctx context.Context, r *provisioner.Run) error {
	defer s.enter(r.Spec.ID)()
	w, name := s.d.w, s.kind+"-"+r.Spec.ID
	fault := w.fault(s.Name())
	if fault == "error-before" {
		return errFake500
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	w.mu.Lock()
	kept := w.resources[:0]
	for _, res := range w.resources {
		if res.kind != s.kind || res.name != name {
			kept = append(kept, res)
		}
	}
	w.resources = kept
	w.mu.Unlock()
	if fault == "error-after" {
		return errFake500
	}
	return nil
}

// recorder is an audit sink that keeps events.
type recorder struct {
	mu     sync.Mutex
	events []audit.Event
	fail   atomic.Bool
}

func (r *recorder) Emit(_ context.Context, e audit.Event) error {
	if r.fail.Load() {
		return errors.New("audit: spool full")
	}
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	return nil
}

func (r *recorder) all() []audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]audit.Event(nil), r.events...)
}

type nopSyncer struct{}

func (nopSyncer) PutGateway(context.Context, registry.Gateway) error { return nil }
func (nopSyncer) DeleteGateway(context.Context, string) error        { return nil }

// withKill gives a provisioner the kill switch k.
func withKill(k *provisionertest.KillSwitch) func(*provisioner.Config, *provisioner.Deps) {
	return func(c *provisioner.Config, _ *provisioner.Deps) { c.KillAt = k.KillAt }
}

// env is what several provisioners ("processes") share: the store, the registry, the
// keystore, the audit sink, the clock and the fake cloud.
type env struct {
	t     *testing.T
	kv    *store.Bolt
	ks    *keystore.Keystore
	reg   *registry.Registry
	audit *recorder
	clock *testenv.Clock
	w     *world
	n     int
}

func newEnv(t *testing.T) *env {
	t.Helper()
	s := provisionertest.NewStores(t)
	return &env{t: t, kv: s.KV, ks: s.Keystore, reg: s.Registry, audit: &recorder{}, clock: testenv.NewClock(time.Now()), w: newWorld(t)}
}

// process returns a new provisioner on e: another process, with a holder of its own.
func (e *env) process(mod ...func(*provisioner.Config, *provisioner.Deps)) (*provisioner.Provisioner, *fakeDriver) {
	e.t.Helper()
	e.n++
	d := &fakeDriver{w: e.w}
	cfg := provisioner.Config{Drivers: map[string]provisioner.Driver{"fake": d}, Holder: fmt.Sprintf("process-%d", e.n),
		LeaseTTL: 30 * time.Second}
	deps := provisioner.Deps{KV: e.kv, Sealer: e.ks, Registry: e.reg, Audit: e.audit,
		Logger: slog.New(slog.DiscardHandler), Metrics: prometheus.NewRegistry(), Now: e.clock.Now}
	for _, m := range mod {
		m(&cfg, &deps)
	}
	p, err := provisioner.New(cfg, deps)
	if err != nil {
		e.t.Fatal(err)
	}
	return p, d
}

// assertOneOfEach checks the end state of a provisioned gateway: one resource of each kind,
// a registry record at the vm's address with the token the vm accepts (a request through
// the registry's entry gets in), and a ready status.
func (e *env) assertOneOfEach(t *testing.T, p *provisioner.Provisioner, id string) {
	t.Helper()
	for kind, n := range e.w.count(id) {
		if n != 1 {
			t.Errorf("%s of %s: got %d, want 1", kind, id, n)
		}
	}
	entry, ok := e.reg.Lookup(id)
	if !ok {
		t.Fatalf("%s is not in the registry", id)
	}
	if want := e.w.srv.URL + "/vm-" + id; entry.Upstream != want {
		t.Errorf("registry upstream %q, want %q", entry.Upstream, want)
	}
	vm := e.w.find("vm", "vm-"+id)
	if len(vm) == 1 && vm[0].token != string(entry.Token) {
		t.Errorf("the registry's token is not the one the vm accepts")
	}
	st, err := p.Get(id)
	if err != nil || st.Phase != provisioner.PhaseReady || st.Rotating {
		t.Errorf("status: phase %q rotating %v error %q (%v), want ready", st.Phase, st.Rotating, st.Error, err)
	}
}

// assertGone checks that gateway id left nothing: no resource, no registry record, no spec,
// status or lease.
func (e *env) assertGone(t *testing.T, p *provisioner.Provisioner, id string) {
	t.Helper()
	for kind, n := range e.w.count(id) {
		if n != 0 {
			t.Errorf("%s of %s left: %d", kind, id, n)
		}
	}
	if _, ok := e.reg.Lookup(id); ok {
		t.Errorf("%s still in the registry", id)
	}
	if _, err := p.Get(id); !errors.Is(err, provisioner.ErrNotFound) {
		t.Errorf("Get(%s) after destroy: %v, want ErrNotFound", id, err)
	}
	for _, b := range []string{"provisioner.specs", "provisioner.status", "provisioner.leases"} {
		if _, err := e.kv.Get(b, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s/%s left in the store (%v)", b, id, err)
		}
	}
}
