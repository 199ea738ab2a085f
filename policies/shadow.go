package policies

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/prometheus/client_golang/prometheus"
)

// Shadow mode: a candidate policy set (Config.ShadowDir) decides beside the live one. Every
// decision the live set makes is evaluated by the candidate too, after the live answer is
// returned and off the request path; only the live decision is enforced. Each pair is
// counted as the same or different, and each difference is reported (Config.ShadowReport)
// with the input, secrets masked, so a team sees exactly which requests would change.
//
// The candidate has a store of its own: its data files, plus a copy of the data the engine
// owns (gateways, platform admins, tenant keys), which every write to the engine's store
// also writes (data.go, write).

// maxShadowInFlight bounds the decisions waiting for a candidate evaluation. Past it a
// decision is not shadowed (counted as skipped) rather than queue work without end.
const maxShadowInFlight = 64

// ShadowDifference is one decision the candidate set would make otherwise.
type ShadowDifference struct {
	// Input is the decision's input as JSON values, without what may be a credential;
	// Erased lists the fields removed, as OPA mask paths (see MaskInput).
	Input  map[string]any
	Erased []string
	// Live is what was enforced; Candidate what the candidate decided (PolicyErrorDecision
	// when it failed, then CandidateErr says why).
	Live, Candidate                 Decision
	CandidateErr                    string
	LiveRevision, CandidateRevision string
}

// shadow is the engine's candidate set and what shadows decisions with it.
type shadow struct {
	dir    string
	report func(ShadowDifference)
	logger *slog.Logger

	cur         atomic.Pointer[shadowSet]
	jobs        chan shadowJob // waiting for a worker; bounded: past it, skipped
	inflight    sync.WaitGroup // jobs queued or being decided
	startMu     sync.Mutex     // guards stop
	stop        chan struct{}  // closed by Close; nil: no workers
	workers     sync.WaitGroup
	dataMu      sync.Mutex // orders writes of engine data with a candidate's copy of it
	lastRefusal atomic.Pointer[ReloadStatus]

	same, differs, skipped prometheus.Counter
}

// shadowSet is one compiled candidate set with its own store.
type shadowSet struct {
	set   *policySet
	store storage.Store
}

func (e *Engine) initShadow(ctx context.Context, cfg Config, reg prometheus.Registerer) error {
	e.shadow.dir, e.shadow.report, e.shadow.logger = cfg.ShadowDir, cfg.ShadowReport, e.logger
	e.shadow.jobs = make(chan shadowJob, maxShadowInFlight)
	outcomes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "moltgate_policy_shadow_decisions_total",
		Help: "Decisions evaluated by the candidate policy set (policies.shadow.dir) too, by outcome: same, differs " +
			"(allow, reason, status or scopes), or skipped (too many candidate evaluations in flight).",
	}, []string{"outcome"})
	e.shadow.same, e.shadow.differs, e.shadow.skipped =
		outcomes.WithLabelValues("same"), outcomes.WithLabelValues("differs"), outcomes.WithLabelValues("skipped")
	if reg != nil {
		for _, c := range []prometheus.Collector{outcomes, revisionCollector{e}} {
			if err := reg.Register(c); err != nil {
				return fmt.Errorf("policies: register metrics: %w", err)
			}
		}
	}
	if cfg.ShadowDir == "" {
		return nil
	}
	return e.loadShadow(ctx)
}

// ShadowRevision returns the revision of the candidate set, "" when there is none.
func (e *Engine) ShadowRevision() string {
	if c := e.shadow.cur.Load(); c != nil {
		return c.set.revision
	}
	return ""
}

// ShadowDir is the candidate directory (Config.ShadowDir).
func (e *Engine) ShadowDir() string { return e.shadow.dir }

// ShadowRefusal returns the refusal of the most recent ReloadShadow, nil when the
// candidate it read was taken (or none ran).
func (e *Engine) ShadowRefusal() *ReloadStatus { return e.shadow.lastRefusal.Load() }

// ReloadShadow re-reads the candidate directory (Reload does too); a set that fails the
// gate (compile, schema, its own tests) is refused and the previous candidate keeps
// shadowing. It does nothing without Config.ShadowDir.
func (e *Engine) ReloadShadow(ctx context.Context) error {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	return e.reloadShadow(ctx)
}

// reloadShadow reloads the candidate, if any; the caller holds reloadMu.
func (e *Engine) reloadShadow(ctx context.Context) error {
	if e.shadow.dir == "" {
		return nil
	}
	if err := e.loadShadow(ctx); err != nil {
		e.shadow.lastRefusal.Store(&ReloadStatus{Time: time.Now(), Err: err})
		e.logger.LogAttrs(ctx, slog.LevelError, "policies: shadow candidate refused; the previous candidate stays",
			slog.String("dir", e.shadow.dir), slog.Any("err", err))
		return err
	}
	e.shadow.lastRefusal.Store(nil)
	return nil
}

// loadShadow loads, gates and installs the candidate set.
func (e *Engine) loadShadow(ctx context.Context) error {
	src, err := loadDir(ctx, e.shadow.dir)
	if err != nil {
		return fmt.Errorf("policies: shadow: %w", unprefixed{err})
	}
	st := inmem.NewWithOpts(inmem.OptReturnASTValuesOnRead(true), inmem.OptRoundTripOnWrite(false))
	docs, err := ast.InterfaceToValue(src.docs)
	if err != nil {
		return fmt.Errorf("policies: shadow: data: %w", err)
	}
	if err := storage.WriteOne(ctx, st, storage.AddOp, storage.RootPath, docs); err != nil {
		return fmt.Errorf("policies: shadow: data: %w", err)
	}
	set, err := e.prepare(ctx, src, st)
	if err != nil {
		return fmt.Errorf("policies: shadow: %w", unprefixed{err})
	}
	// The engine's own data is copied and the candidate installed under dataMu: a write
	// after the copy finds the candidate and writes it too.
	e.shadow.dataMu.Lock()
	defer e.shadow.dataMu.Unlock()
	for _, k := range []string{dataGateways, dataPlatformAdmins, dataTenantKeys} {
		v, err := storage.ReadOne(ctx, e.store, storage.Path{k})
		if err != nil {
			return fmt.Errorf("policies: shadow: data.%s: %w", k, err)
		}
		if err := storage.WriteOne(ctx, st, storage.AddOp, storage.Path{k}, copyValue(v)); err != nil {
			return fmt.Errorf("policies: shadow: data.%s: %w", k, err)
		}
	}
	e.startShadowWorkers()
	old := e.shadow.cur.Swap(&shadowSet{set: set, store: st})
	from := ""
	if old != nil {
		from = old.set.revision
	}
	e.logger.LogAttrs(ctx, slog.LevelInfo, "policies: shadow candidate loaded",
		slog.String("from_revision", from), slog.String("revision", set.revision), slog.String("dir", e.shadow.dir))
	return nil
}

// loadDir loads the policy set of a directory as Config.Dir is loaded.
func loadDir(ctx context.Context, dir string) (*source, error) {
	fsys, err := dirFS(dir)
	if err != nil {
		return nil, err
	}
	return loadSource(ctx, fsys, dir)
}

// mirror applies a write of the engine's data to the candidate's store too. The caller
// holds shadow.dataMu.
func (s *shadow) mirror(ctx context.Context, op storage.PatchOp, path storage.Path, value any) error {
	c := s.cur.Load()
	if c == nil {
		return nil
	}
	if err := storage.WriteOne(ctx, c.store, op, path, copyValue(value)); err != nil {
		return fmt.Errorf("policies: shadow: %w", err)
	}
	return nil
}

// copyValue deep-copies an AST value: the store patches the objects it holds in place, so
// the two stores must not share one.
func copyValue(v any) any {
	if av, ok := v.(ast.Value); ok {
		return ast.NewTerm(av).Copy().Value
	}
	return v
}

// shadowJob is one decision for the candidate to decide again.
type shadowJob struct {
	c       *shadowSet
	liveSet *policySet
	input   ast.Value
	live    Decision
}

// shadowDecide has the candidate, if any, decide input too, off the caller's path, and
// counts and reports the pair. live was decided by liveSet.
func (e *Engine) shadowDecide(liveSet *policySet, input ast.Value, live Decision) {
	c := e.shadow.cur.Load()
	if c == nil {
		return
	}
	e.shadow.inflight.Add(1)
	select {
	case e.shadow.jobs <- shadowJob{c: c, liveSet: liveSet, input: input, live: live}:
	default:
		e.shadow.inflight.Done()
		e.shadow.skipped.Inc()
	}
}

// shadowWorker decides jobs until stop closes. Workers live as long as the engine's shadow
// mode: a goroutine per decision would grow a fresh stack to OPA's depth every time.
func (e *Engine) shadowWorker(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case j := <-e.shadow.jobs:
			e.shadowJob(j)
			e.shadow.inflight.Done()
		}
	}
}

func (e *Engine) shadowJob(j shadowJob) {
	// Its own context: the request it shadows may be over already.
	d, err := e.eval(context.Background(), j.c.set, j.input)
	if err == nil && sameDecision(j.live, d) {
		e.shadow.same.Inc()
		return
	}
	e.shadow.differs.Inc()
	diff := ShadowDifference{Live: j.live, Candidate: d, LiveRevision: j.liveSet.revision, CandidateRevision: j.c.set.revision}
	if err != nil {
		diff.Candidate, diff.CandidateErr = PolicyErrorDecision(), err.Error()
	}
	if in, ok := jsonInput(j.input); ok {
		diff.Input, diff.Erased = MaskInput(in)
	}
	if e.shadow.report != nil {
		e.shadow.report(diff)
	}
}

// Close stops shadow mode's workers once the candidate evaluations in flight are done; the
// engine decides on without a candidate. It does nothing without one.
func (e *Engine) Close() {
	e.shadow.cur.Store(nil)
	e.shadow.inflight.Wait()
	e.shadow.startMu.Lock()
	defer e.shadow.startMu.Unlock()
	if e.shadow.stop != nil {
		close(e.shadow.stop)
		e.shadow.workers.Wait()
		e.shadow.stop = nil
	}
}

// startShadowWorkers starts the workers, once: one per processor.
func (e *Engine) startShadowWorkers() {
	e.shadow.startMu.Lock()
	defer e.shadow.startMu.Unlock()
	if e.shadow.stop != nil {
		return
	}
	e.shadow.stop = make(chan struct{})
	for range runtime.GOMAXPROCS(0) {
		e.shadow.workers.Add(1)
		go func(stop <-chan struct{}) {
			defer e.shadow.workers.Done()
			e.shadowWorker(stop)
		}(e.shadow.stop)
	}
}

// WaitShadow waits for the candidate evaluations in flight: for tests, and for a caller
// that wants every difference reported before it reads the counts.
func (e *Engine) WaitShadow() { e.shadow.inflight.Wait() }

// sameDecision compares what is enforced of a decision: allow, reason, status, scopes.
func sameDecision(a, b Decision) bool {
	return a.Allow == b.Allow && a.Reason == b.Reason && a.Status == b.Status && slices.Equal(a.Scopes, b.Scopes)
}

func jsonInput(v ast.Value) (map[string]any, bool) {
	j, err := ast.JSON(v)
	if err != nil {
		return nil, false
	}
	m, ok := j.(map[string]any)
	return m, ok
}

// revisionCollector exports the revisions that decide on this replica, read at each scrape:
// moltgate_policy_active_revision_info{set="live"|"candidate", revision} 1.
type revisionCollector struct{ e *Engine }

var revisionDesc = prometheus.NewDesc("moltgate_policy_active_revision_info",
	"The policy revision this replica enforces (set=\"live\") and the candidate it shadows (set=\"candidate\"), as a label; the value is 1.",
	[]string{"set", "revision"}, nil)

func (revisionCollector) Describe(ch chan<- *prometheus.Desc) { ch <- revisionDesc }

func (c revisionCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(revisionDesc, prometheus.GaugeValue, 1, "live", c.e.Revision())
	if rev := c.e.ShadowRevision(); rev != "" {
		ch <- prometheus.MustNewConstMetric(revisionDesc, prometheus.GaugeValue, 1, "candidate", rev)
	}
}

var _ prometheus.Collector = revisionCollector{}

// Shadow has the candidate, if any, decide in too, given live, the live set's decision for
// in reused by a caller without asking Decide (the WebSocket relay's per-socket cache): the
// candidate sees all the traffic the live set decides, reused decisions included.
func (e *Engine) Shadow(in *Input, live Decision) {
	if in == nil || e.shadow.cur.Load() == nil {
		return
	}
	e.shadowDecide(e.cur.Load(), e.codec.input(in), live)
}
