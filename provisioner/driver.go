package provisioner

import (
	"context"
	"log/slog"
	"maps"
	"slices"

	"github.com/moltgate/moltgate/keystore"
)

// Driver provides the steps that make a gateway's infrastructure: a local OpenClaw process,
// or a Fly app, volume, machine and a Cloudflare tunnel. The provisioner runs the core's
// "token" step first, then the driver's steps in the order given, then "register" (and
// "probe"); destroy runs them in reverse.
//
// Steps of several providers compose by listing them: a fly driver that reaches its machines
// through Cloudflare returns, say, cloudflare's tunnel step, its own app, volume, IPs, secrets
// and machine steps, then cloudflare's DNS and Access steps. Steps hand values to later steps
// through Run.SetOutput (ids, never secrets), and the step that knows where the gateway
// answers calls Run.SetUpstream before "register" runs.
type Driver interface {
	// Steps are the driver's steps in creation order. Their names are stable: they key the
	// steps' records in the store, and label metrics and audit events ("local.process",
	// "fly.machine", "cloudflare.dns").
	Steps() []Step
}

// Step is one idempotent unit of provisioning, owning one resource known by a deterministic
// name derived from the gateway (its id, a tenant prefix): never a random one, so that a
// lookup can always find what an earlier attempt made.
//
// Errors are recorded in the gateway's status and shown to operators: they must not carry
// secrets (SDK errors that quote request bodies are reduced to their codes first).
type Step interface {
	// Name is the step's stable name.
	Name() string
	// Check reports whether the resource is there and as the spec asks, changing nothing. It
	// runs on every pass for a step recorded done; false makes the pass run Ensure again
	// (something died, drifted, or the spec changed: a new token, a new key).
	Check(ctx context.Context, r *Run) (bool, error)
	// Ensure makes the resource exist as asked: look it up by its deterministic name, create it
	// if missing, adopt it on a name conflict, update it where it differs. A create whose
	// result is unknown (a timeout, a 5xx after which the SDK retried) is resolved by a
	// lookup, never by a second create; r.Pending says an earlier attempt may have left one.
	Ensure(ctx context.Context, r *Run) error
	// Destroy removes the resource, found by its deterministic name (outputs of earlier
	// passes may be missing). A resource already gone counts as removed.
	Destroy(ctx context.Context, r *Run) error
}

// Waker is implemented by a driver that notices by itself when a gateway needs a pass (a
// local process that died). New hands it the provisioner's Wake.
type Waker interface {
	SetWake(wake func(id string))
}

// SpecChecker is implemented by a driver that refuses some specs up front, before anything
// is recorded (an image not pinned by digest).
type SpecChecker interface {
	CheckSpec(s Spec) error
}

// Run is what a step sees of one pass over one gateway. It is valid during the step's call
// only, and not safe for concurrent use.
type Run struct {
	// Spec is the gateway as asked for.
	Spec Spec
	// Pending is true when this step's last attempt did not record its end, so it may have
	// made its resource: Ensure must find it by lookup before it creates anything.
	Pending bool
	// Logger logs with the gateway and step as attributes.
	Logger *slog.Logger

	p     *Provisioner
	st    *pass
	step  string
	keys  []Key // opened by OpenKeys, cleared when the step returns
	token keystore.Secret
}

// Token is the gateway token the gateway must hold: generation Spec.TokenGeneration, 64 hex
// digits. It is nil before the "token" step has run (in a Destroy, say).
func (r *Run) Token() keystore.Secret { return r.st.token }

// Output returns a value an earlier step recorded with SetOutput, or "".
func (r *Run) Output(key string) string { return r.st.rec.Outputs[key] }

// SetOutput records a value for later steps and passes (an id, a port: never a secret). It
// is stored with the step's end.
func (r *Run) SetOutput(key, value string) {
	if r.st.rec.Outputs == nil {
		r.st.rec.Outputs = map[string]string{}
	}
	if r.st.rec.Outputs[key] != value {
		r.st.rec.Outputs[key] = value
		r.st.dirty = true
	}
}

// Drift reports, from a Check, that what the step made changed behind moltgate's back:
// kind is a short fixed word ("image", "dns", "ingress") that labels the metric
// moltgate_provisioner_drift_found_total; detail says what was found, never a secret. It is
// kept in the status (Status.Drift) and marked repaired once the step's Ensure ends well.
// The same finding again, unrepaired (drift moltgate leaves alone), counts once.
func (r *Run) Drift(kind, detail string) {
	if !r.st.rec.noteDrift(Drift{Step: r.step, Kind: kind, Detail: detail, Found: r.p.deps.Now().UTC()}) {
		return
	}
	r.p.m.drift(r.st.driver, kind)
	r.st.dirty = true
	r.Logger.LogAttrs(context.Background(), slog.LevelWarn, "provisioner: drift found", slog.String("kind", kind), slog.String("detail", detail))
}

// Upstream is the URL the gateway answers at, as a step set it, or "".
func (r *Run) Upstream() string { return r.st.rec.Upstream }

// SetUpstream records the URL the gateway answers at, which "register" gives the registry.
func (r *Run) SetUpstream(u string) {
	if r.st.rec.Upstream != u {
		r.st.rec.Upstream = u
		r.st.dirty = true
	}
}

// ActiveKeys returns the metadata (never the secrets) of the tenant's active provider keys,
// sorted by provider: enough to tell whether a gateway holds the current ones.
func (r *Run) ActiveKeys() ([]keystore.APIKey, error) {
	if r.p.deps.Keys == nil {
		return nil, nil
	}
	m, err := r.p.deps.Keys.Active(r.Spec.Tenant)
	if err != nil {
		return nil, err
	}
	out := make([]keystore.APIKey, 0, len(m))
	for _, p := range slices.Sorted(maps.Keys(m)) {
		if m[p].Kind == keystore.KindProviderKey {
			out = append(out, m[p])
		}
	}
	return out, nil
}

// Key is one of the tenant's active provider keys, opened.
type Key struct {
	keystore.APIKey
	// Secret is the key itself; it is cleared when the step returns.
	Secret keystore.Secret
}

// OpenKeys opens the tenant's active provider keys through the keystore Opener (each open
// is a secret.open audit event, reason provision). The secrets are cleared when the step
// returns: a step delivers them (a process environment, app secrets) and keeps no copy.
func (r *Run) OpenKeys(ctx context.Context) ([]Key, error) {
	meta, err := r.ActiveKeys()
	if err != nil || len(meta) == 0 {
		return nil, err
	}
	if r.p.deps.Opener == nil {
		return nil, errNoOpener
	}
	out := make([]Key, 0, len(meta))
	for _, k := range meta {
		s, err := r.p.deps.Opener.Open(ctx, r.Spec.Tenant, k.ID)
		if err != nil {
			clearKeys(out)
			return nil, err
		}
		out = append(out, Key{APIKey: k, Secret: s})
	}
	r.keys = append(r.keys, out...)
	return out, nil
}

func clearKeys(keys []Key) {
	for _, k := range keys {
		clear(k.Secret)
	}
}
