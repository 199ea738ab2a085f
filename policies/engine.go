package policies

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"path"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	opametrics "github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/prometheus/client_golang/prometheus"
)

// DecisionQuery is the decision the engine evaluates: the default rules merged with the
// extension point. (With the embedded rules and no moltgate.custom rules, the engine queries
// default_decision, which is then the same answer.)
const DecisionQuery = "data.moltgate.authz.decision"

// DefaultTimeout bounds one decision when Config.Timeout is zero. A decision takes tens of
// microseconds; the bound is wall time, so it leaves room for a starved or collecting
// process, where a refusal would be noise rather than protection.
const DefaultTimeout = 250 * time.Millisecond

// Config configures an Engine. The zero value serves the embedded default policy set with
// the default timeout.
type Config struct {
	// Dir, if set, is a directory whose policy set replaces the embedded one: every *.rego
	// file and every data file (*.json, *.yaml, *.yml), except test files (*_test.rego,
	// *_test.json, ...), loaded as `opa eval -d Dir` would (a data file in a subdirectory
	// sits under data.<subdir>).
	// Subdirectories named testdata or starting with "." are skipped. Empty means the
	// embedded default set (see Default).
	Dir string
	// Timeout bounds the evaluation of one decision; past it the decision fails closed.
	// Zero means DefaultTimeout (250ms).
	Timeout time.Duration
	// Fresh, if set, is asked before every decision whether the data the engine holds is
	// known to be current (a replica following a shared store); an error refuses the
	// decision with a DecisionError of kind FailStale. It must be cheap. Nil: always current.
	Fresh func() error
	// ShadowDir, if set, is a candidate policy set (a directory, gated like Dir) evaluated
	// beside the live one on every decision and never enforced; see shadow.go. Empty: none.
	ShadowDir string
	// ShadowReport, if set, is told of every decision the candidate would make otherwise,
	// secrets masked. It is called off the request path and must not block for long.
	ShadowReport func(ShadowDifference)
	// Bundle, if set, makes an OPA bundle server the source of the policy set instead of Dir
	// or the embedded set (see BundleConfig and PollBundle). New fails when the first bundle
	// cannot be fetched or is refused. Exclusive with Dir.
	Bundle *BundleConfig
	// MemoSize bounds the exact decision memo (memo.go), in decisions. Zero means
	// DefaultMemoSize (100,000); negative turns the memo off.
	MemoSize int
}

// Engine evaluates policy decisions. It is safe for concurrent use: Decide may run
// alongside data updates and Reload.
type Engine struct {
	dir     string
	timeout time.Duration
	fresh   func() error
	logger  *slog.Logger
	remote  *bundleSource // Config.Bundle; nil without one
	store   storage.Store
	codec   *codec
	metrics *metrics
	memos   *memoHook

	caches    ruleCachePool
	noMetrics rego.EvalOption // OPA's internal timers are not read: skip their allocations

	cur         atomic.Pointer[policySet]
	gen         atomic.Uint64 // see Generation
	reloadMu    sync.Mutex    // serialises Reload
	lastRefusal atomic.Pointer[ReloadStatus]
	keysMu      sync.Mutex // serialises SyncTenantKeys and LoadTenantKeys

	shadow   shadow                   // the candidate set (shadow.go)
	promoted atomic.Pointer[Snapshot] // a promoted set overriding Dir (promote.go)
}

// policySet is one compiled generation of policy source and static data.
type policySet struct {
	query    rego.PreparedEvalQuery
	queried  string // the query's text
	revision string
	docs     map[string]any // top-level documents of the set's data files
	memo     *memoPlan      // the input paths its rules read, or why its decisions are not memoised
}

// New loads and compiles the policy set named by cfg, prepares the decision query against
// an in-memory store holding the set's data files plus empty data.gateways,
// data.platform_admins and data.tenant_keys, and registers the engine's metrics on reg (nil: not registered).
// Compile errors name the file and line.
func New(ctx context.Context, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Engine, error) {
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("policies: timeout: negative (%v)", cfg.Timeout)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	e := &Engine{
		dir:       cfg.Dir,
		timeout:   cfg.Timeout,
		fresh:     cfg.Fresh,
		logger:    logger,
		codec:     newCodec(),
		noMetrics: rego.EvalMetrics(opametrics.NoOp()),
	}
	if e.timeout == 0 {
		e.timeout = DefaultTimeout
	}

	var first *candidate
	if cfg.Bundle != nil {
		if cfg.Dir != "" {
			return nil, errors.New("policies: give a directory or a bundle, not both")
		}
		var err error
		if first, err = e.firstBundle(ctx, *cfg.Bundle, reg); err != nil {
			return nil, err
		}
	}
	src, err := e.load(ctx, first)
	if err != nil {
		return nil, err
	}

	// The store keeps parsed AST values so evaluation reads data without converting it, and
	// skips the JSON round trip on write: the engine writes only values it built itself.
	e.store = inmem.NewWithOpts(inmem.OptReturnASTValuesOnRead(true), inmem.OptRoundTripOnWrite(false))
	root := make(map[string]any, len(src.docs)+3)
	maps.Copy(root, src.docs)
	root[dataGateways] = map[string]any{}
	root[dataPlatformAdmins] = []any{}
	root[dataTenantKeys] = map[string]any{}
	rootValue, err := ast.InterfaceToValue(root)
	if err != nil {
		return nil, fmt.Errorf("policies: data: %w", err)
	}
	if err := e.write(ctx, storage.AddOp, storage.RootPath, rootValue); err != nil {
		return nil, fmt.Errorf("policies: data: %w", err)
	}

	set, err := e.prepare(ctx, src, e.store)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	e.metrics = m
	e.cur.Store(set)
	if first != nil {
		first.live()
	}
	if e.memos, err = newMemoHook(cfg.MemoSize, reg, e.cur.Load); err != nil {
		return nil, err
	}
	if err := e.initShadow(ctx, cfg, reg); err != nil {
		return nil, err
	}
	return e, nil
}

// Fresh returns nil while the engine's data is known to be current (Config.Fresh), else a
// DecisionError of kind FailStale, which matches ErrStale. Whatever reuses a decision
// asks it before each reuse.
func (e *Engine) Fresh() error {
	if e.fresh == nil {
		return nil
	}
	if err := e.fresh(); err != nil {
		return &DecisionError{Kind: FailStale, Err: err}
	}
	return nil
}

// Revision returns a short hash of the loaded policy set (modules and data files), for
// audit events: two engines with the same revision decide alike given the same gateways.
func (e *Engine) Revision() string { return e.cur.Load().revision }

// Generation changes whenever anything a decision reads may have changed: the policy set
// or any data (gateways, platform admins, tenant keys, data files). It moves after the change
// is visible, so a decision made after reading a generation sees at least that state; a
// cache of decisions keyed by it is exact, except for policies that read the clock.
func (e *Engine) Generation() uint64 { return e.gen.Load() }

// Decide evaluates data.moltgate.authz.decision for in.
//
// It fails closed: when the policy errs, exceeds the time limit, is undefined or returns
// anything but an object with a boolean allow, Decide returns PolicyErrorDecision() (deny,
// 503) and a *DecisionError, which matches ErrPolicy. A non-nil error never comes with
// Allow true. When ctx is cancelled first (the caller's client went away) the error's Kind
// is FailCanceled and it matches context.Canceled: that is counted as a cancelled decision,
// not as a policy error.
func (e *Engine) Decide(ctx context.Context, in *Input) (Decision, error) {
	start := time.Now()
	d, err := e.decide(ctx, in)
	e.metrics.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		if de, ok := err.(*DecisionError); ok && de.Kind == FailCanceled {
			e.metrics.canceled.Inc()
		} else {
			e.metrics.errors.Inc()
			e.metrics.deny.Inc()
		}
		d = PolicyErrorDecision()
		d.ID, d.Revision = NewDecisionID(), e.Revision()
		return d, err
	}
	d.ID = NewDecisionID() // decide set Revision: the set it evaluated
	if d.Allow {
		e.metrics.allow.Inc()
	} else {
		e.metrics.deny.Inc()
	}
	return d, nil
}

// decide evaluates the decision for in; opts are added to the query's evaluation (Explain
// traces it).
func (e *Engine) decide(ctx context.Context, in *Input, opts ...rego.EvalOption) (Decision, error) {
	if in == nil {
		return Decision{}, &DecisionError{Kind: FailInput, Err: errors.New("nil input")}
	}
	if err := ctx.Err(); err != nil {
		return Decision{}, ctxError(err)
	}
	if err := e.Fresh(); err != nil {
		return Decision{}, err
	}
	// The generation is read before the set and the data: a memoised decision is stored
	// under a generation no newer than what it was decided on.
	gen := e.gen.Load()
	set := e.cur.Load()
	input := e.codec.input(in)
	var key *keyEncoder
	if len(opts) == 0 { // a traced evaluation (Evaluate) is evaluated, never reused
		key = e.memoKey(set, gen, input)
		if d, ok := e.memoGet(key, gen); ok {
			e.shadowDecide(set, input, d)
			return d, nil
		}
	}
	d, err := e.eval(ctx, set, input, opts...)
	if err != nil || len(opts) > 0 {
		return d, err
	}
	e.memoPut(key, gen, d)
	e.shadowDecide(set, input, d)
	return d, nil
}

// eval evaluates the decision of set for input, bounded by the engine's timeout; opts are
// added to the evaluation's own (a tracer).
func (e *Engine) eval(ctx context.Context, set *policySet, input ast.Value, opts ...rego.EvalOption) (Decision, error) {

	// One cancel flag, raised by a timer or by ctx, instead of the goroutine per query that
	// rego starts when it handles cancellation itself.
	cancel := topdown.NewCancel()
	timer := time.AfterFunc(e.timeout, cancel.Cancel)
	stop := context.AfterFunc(ctx, cancel.Cancel)
	cache := e.caches.get()
	rs, err := set.query.Eval(ctx, append(opts, rego.EvalParsedInput(input), rego.EvalExternalCancel(cancel),
		rego.EvalVirtualCache(cache), e.noMetrics)...)
	timer.Stop()
	stop()
	e.caches.put(cache)

	if err != nil {
		if topdown.IsCancel(err) || cancel.Cancelled() {
			if cause := ctx.Err(); cause != nil {
				return Decision{}, ctxError(cause)
			}
			return Decision{}, &DecisionError{Kind: FailTimeout, Err: fmt.Errorf("exceeded %v", e.timeout)}
		}
		return Decision{}, &DecisionError{Kind: FailEval, Err: err}
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return Decision{}, &DecisionError{Kind: FailUndefined}
	}
	if len(rs) > 1 {
		return Decision{}, &DecisionError{Kind: FailResult, Err: fmt.Errorf("%d results", len(rs))}
	}
	t, ok := rs[0].Expressions[0].Value.(*ast.Term)
	if !ok {
		return Decision{}, &DecisionError{Kind: FailResult, Err: fmt.Errorf("unexpected result type %T", rs[0].Expressions[0].Value)}
	}
	d, err := e.codec.decision(t)
	if err != nil {
		return Decision{}, &DecisionError{Kind: FailResult, Err: err}
	}
	d.Revision = set.revision
	return d, nil
}

// ctxError is the error of a decision whose context ended: FailCanceled when it was
// cancelled, FailTimeout when its deadline passed.
func ctxError(err error) *DecisionError {
	if errors.Is(err, context.Canceled) {
		return &DecisionError{Kind: FailCanceled, Err: err}
	}
	return &DecisionError{Kind: FailTimeout, Err: err}
}

// Reload re-reads the policy set (Config.Dir; the embedded set and the bundle in force have
// nothing to re-read but are recompiled all the same: PollBundle fetches new bundles),
// compiles it and swaps it in atomically. A set that fails to load or compile is refused
// with an error naming file and line, and the current set keeps serving. Gateways, platform
// admins and tenant keys are kept.
func (e *Engine) Reload(ctx context.Context) error { return e.reloadWith(ctx, nil) }

// reloadWith is Reload with the candidate next returns (nil next: the configured source).
func (e *Engine) reloadWith(ctx context.Context, next func() (*candidate, error)) error {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	err := e.counted(e.reload(ctx, next))
	if next == nil {
		e.reloadShadow(ctx) // the candidate directory too: its refusal is its own (ShadowRefusal)
	}
	return err
}

// counted counts and keeps the result of a reload: err is a refusal, nil a set gone live.
func (e *Engine) counted(err error) error {
	if err != nil {
		e.metrics.refused.Inc()
		e.lastRefusal.Store(&ReloadStatus{Time: time.Now(), Err: err})
		return err
	}
	e.metrics.reloaded.Inc()
	e.lastRefusal.Store(nil)
	return nil
}

// ReloadStatus describes the last refused candidate set.
type ReloadStatus struct {
	Time time.Time // when it was refused
	Err  error     // why: names the file and line, or the failed tests
}

// LastRefusal returns the refusal of the most recent Reload, nil when it went live (or none
// ran): for /readyz detail. The set that decides is the previous one (Revision).
func (e *Engine) LastRefusal() *ReloadStatus { return e.lastRefusal.Load() }

func (e *Engine) reload(ctx context.Context, next func() (*candidate, error)) error {
	var cand *candidate
	if next != nil {
		var err error
		if cand, err = next(); err != nil {
			return fmt.Errorf("policies: reload: %w", err)
		}
		if err := e.gateFallback(ctx, cand); err != nil {
			return fmt.Errorf("policies: reload: %w", err)
		}
	}
	src, err := e.load(ctx, cand)
	if err != nil {
		return fmt.Errorf("policies: reload: %w", err)
	}
	return e.install(ctx, src, cand)
}

// install prepares src and swaps it in as the live set (cand, if any, is then in force). The
// caller holds reloadMu.
func (e *Engine) install(ctx context.Context, src *source, cand *candidate) error {
	set, err := e.prepare(ctx, src, e.store)
	if err != nil {
		return fmt.Errorf("policies: reload: %w", err)
	}
	old := e.cur.Load()
	if !reflect.DeepEqual(old.docs, set.docs) {
		if err := e.replaceDocs(ctx, old.docs, set.docs); err != nil {
			return fmt.Errorf("policies: reload: data: %w", err)
		}
	}
	e.cur.Store(set)
	e.gen.Add(1)
	if cand != nil {
		cand.live()
	}
	e.logger.LogAttrs(ctx, slog.LevelInfo, "policies: reloaded",
		slog.String("from_revision", old.revision), slog.String("revision", set.revision))
	return nil
}

// replaceDocs swaps the data-file documents in one transaction. Between this write and the
// swap of the query, the old policies may see the new data files for an instant.
func (e *Engine) replaceDocs(ctx context.Context, old, docs map[string]any) error {
	return storage.Txn(ctx, e.store, storage.WriteParams, func(txn storage.Transaction) error {
		for k := range old {
			if _, ok := docs[k]; !ok {
				if err := e.store.Write(ctx, txn, storage.RemoveOp, storage.Path{k}, nil); err != nil && !storage.IsNotFound(err) {
					return err
				}
			}
		}
		for _, k := range slices.Sorted(maps.Keys(docs)) {
			v, err := ast.InterfaceToValue(docs[k])
			if err != nil {
				return fmt.Errorf("data.%s: %w", k, err)
			}
			if err := e.store.Write(ctx, txn, storage.AddOp, storage.Path{k}, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// source is a loaded, compiled policy set not yet prepared.
type source struct {
	compiler *ast.Compiler
	query    string // DecisionQuery, or the default rules' own answer (see decisionQuery)
	docs     map[string]any
	revision string
}

// load reads and compiles the live set: a promoted one (promote.go) while there is one, else
// cand, or without one the configured policy set; a set other than the embedded one must
// also pass its own tests (see gate).
func (e *Engine) load(ctx context.Context, cand *candidate) (*source, error) {
	fsys, name := Default(), "embedded policies"
	switch p := e.promoted.Load(); {
	case p != nil:
		fsys, name = p.FS(), "promoted revision "+p.Revision
	case cand != nil:
		fsys, name = cand.fsys, cand.name
	case e.remote != nil:
		fsys, name = e.remote.inForce(), "bundle "+e.remote.shown
	case e.dir != "":
		var err error
		if fsys, err = dirFS(e.dir); err != nil {
			return nil, err
		}
		name = e.dir
	}
	return loadSource(ctx, fsys, name)
}

// loadSource reads and compiles the policy set in fsys (named name in errors); a set other
// than the embedded one must also pass its own tests (see gate).
func loadSource(ctx context.Context, fsys fs.FS, name string) (*source, error) {
	gated := fsys != Default()
	res, err := loadSet(fsys, false)
	if err != nil {
		return nil, fmt.Errorf("policies: load %s: %w", name, err)
	}
	for _, k := range []string{dataGateways, dataPlatformAdmins, dataTenantKeys} {
		if _, ok := res.Documents[k]; ok {
			return nil, fmt.Errorf("policies: load %s: data files define data.%s, which the engine owns", name, k)
		}
	}
	modules := res.ParsedModules()
	if len(modules) == 0 {
		return nil, fmt.Errorf("policies: load %s: no .rego files", name)
	}
	schemas, err := inputSchema()
	if err != nil {
		return nil, err
	}
	// The published input schema types input for every rule: a misspelt input field is
	// a compile error, not a rule that is silently never true.
	c := ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1).WithSchemas(schemas)
	if c.Compile(modules); c.Failed() {
		return nil, fmt.Errorf("policies: compile %s: %w", name, c.Errors)
	}
	if len(c.GetRulesExact(ast.MustParseRef(DecisionQuery))) == 0 {
		return nil, fmt.Errorf("policies: compile %s: %w", name, ErrNoDecisionRule)
	}
	if err := checkDataRefs(c, res.Documents); err != nil {
		return nil, fmt.Errorf("policies: load %s: %w", name, err)
	}
	if err := checkRoutePrefixes(res.Documents); err != nil {
		return nil, fmt.Errorf("policies: load %s: %w", name, err)
	}
	if gated {
		if err := gate(ctx, fsys); err != nil {
			return nil, fmt.Errorf("policies: test %s: %w", name, err)
		}
	}
	rev, err := revision(res)
	if err != nil {
		return nil, fmt.Errorf("policies: load %s: %w", name, err)
	}
	usesDefaults := !gated
	if gated {
		own, err := loadFS(fsys, false)
		if err != nil {
			return nil, fmt.Errorf("policies: load %s: %w", name, err)
		}
		usesDefaults = !replacesDefaults(own)
	}
	return &source{compiler: c, query: decisionQuery(c, usesDefaults), docs: res.Documents, revision: rev}, nil
}

// prepare prepares src's query against store (the engine's, or a candidate's own).
func (e *Engine) prepare(ctx context.Context, src *source, store storage.Store) (*policySet, error) {
	pq, err := rego.New(
		rego.Query(src.query),
		rego.Compiler(src.compiler),
		rego.Store(store),
		// Hand results back as AST terms: the codec reads them without a JSON detour.
		rego.GenerateJSON(func(t *ast.Term, _ *rego.EvalContext) (any, error) { return t, nil }),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("policies: prepare: %w", err)
	}
	return &policySet{query: pq, queried: src.query, revision: src.revision, docs: src.docs, memo: planMemo(src.compiler)}, nil
}

// loadFS loads the modules (with *_test.rego when tests is true) and data files of a policy
// set, laid out as `opa test` / `opa eval -d` read a directory.
func loadFS(fsys fs.FS, tests bool) (*loader.Result, error) {
	filter := func(p string, info fs.FileInfo, depth int) bool {
		name := info.Name()
		if info.IsDir() {
			return depth > 0 && (name == "testdata" || name == "schemas" || strings.HasPrefix(name, "."))
		}
		ext := path.Ext(name)
		switch ext {
		case ".rego", ".json", ".yaml", ".yml":
			// name_test.rego and test fixtures (name_test.json, ...) only load for tests.
			return !tests && strings.HasSuffix(name, "_test"+ext)
		}
		return true
	}
	return loader.NewFileLoader().
		WithFS(fsys).
		WithRegoVersion(ast.RegoV1).
		WithProcessAnnotation(true).
		Filtered([]string{"."}, filter)
}

// revision hashes module names and sources and the data documents.
func revision(res *loader.Result) (string, error) {
	h := sha256.New()
	for _, name := range slices.Sorted(maps.Keys(res.Modules)) {
		fmt.Fprintf(h, "module %q %d\n", name, len(res.Modules[name].Raw))
		h.Write(res.Modules[name].Raw)
	}
	docs, err := json.Marshal(res.Documents) // map keys are sorted: deterministic
	if err != nil {
		return "", fmt.Errorf("hash data: %w", err)
	}
	h.Write([]byte("data\n"))
	h.Write(docs)
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}
