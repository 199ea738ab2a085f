package provisioner

import (
	"errors"
	"time"
)

// Errors of provisioner calls, for errors.Is.
var (
	// ErrNotFound: no gateway of that id is provisioned.
	ErrNotFound = errors.New("provisioner: gateway not provisioned")
	// ErrExists: the id is taken by a gateway this call may not change (another tenant or
	// driver, or one registered by other means with `gateway add`).
	ErrExists = errors.New("provisioner: gateway exists")
	// ErrInvalid: the spec is refused; the message names the field.
	ErrInvalid = errors.New("provisioner: invalid")
	// ErrDestroying: the gateway is being destroyed; it can be provisioned again once gone.
	ErrDestroying = errors.New("provisioner: gateway is being destroyed")
	// ErrLeaseHeld: another process (or pass) works on the gateway now.
	ErrLeaseHeld = errors.New("provisioner: gateway lease held by another process")
	// ErrLeaseLost: the pass lost its lease (it could not refresh it in time) and stopped.
	ErrLeaseLost = errors.New("provisioner: gateway lease lost")
	// ErrConflict: the gateway's status changed under the pass (another holder wrote it).
	ErrConflict = errors.New("provisioner: status changed concurrently")

	errNoOpener = errors.New("provisioner: no keystore opener to open provider keys")
)

// Spec is a gateway as asked for: what Apply, Destroy and RotateToken record.
type Spec struct {
	ID     string `json:"id"`
	Tenant string `json:"tenant"`
	Owner  string `json:"owner"`
	// Driver names the driver that makes its infrastructure ("local", "fly").
	Driver string `json:"driver"`
	// Image is the gateway image reference, for drivers that run images (fly: pinned by
	// digest). The local driver runs the pinned OpenClaw install and ignores it.
	Image string `json:"image,omitempty"`
	// Absent means destroy: remove everything, then forget the gateway.
	Absent bool `json:"absent,omitempty"`
	// TokenGeneration is bumped by RotateToken: the gateway must hold a token of this
	// generation (1 for the first).
	TokenGeneration uint64 `json:"token_generation"`
	// Generation counts changes of the spec; Status.ObservedGeneration says which one the
	// world was last brought to.
	Generation uint64    `json:"generation"`
	Created    time.Time `json:"created"`
	Updated    time.Time `json:"updated"`
}

// Phase is where a gateway's provisioning stands.
type Phase string

// Phases of a gateway.
const (
	// PhasePending: recorded, no pass has finished a step yet.
	PhasePending Phase = "pending"
	// PhaseProvisioning: a pass is bringing the world to the spec (or will retry: see Error).
	PhaseProvisioning Phase = "provisioning"
	// PhaseReady: the last pass brought the world to the current spec.
	PhaseReady Phase = "ready"
	// PhaseDestroying: destroy was asked for; the gateway is forgotten once everything is gone.
	PhaseDestroying Phase = "destroying"
)

// StepState is where one step stands.
type StepState string

// States of a step.
const (
	// StepWaiting: not run yet (in Status only; nothing is stored for it).
	StepWaiting StepState = "waiting"
	// StepPending: started and not recorded as ended; it may have made its resource.
	StepPending StepState = "pending"
	// StepDone: ended well.
	StepDone StepState = "done"
)

// Operations a step record is about.
const (
	OpEnsure  = "ensure"
	OpDestroy = "destroy"
)

// StepStatus is one step's record.
type StepStatus struct {
	Name  string    `json:"name"`
	State StepState `json:"state"`
	// Op is what the step last did: ensure or destroy.
	Op string `json:"op,omitempty"`
	// Attempts counts the attempts of Op since it last ended well.
	Attempts int       `json:"attempts,omitempty"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
	// Error is the last attempt's failure, if it failed.
	Error string `json:"error,omitempty"`
}

// Status is a gateway's spec and how far the world is from it. It holds no secret.
type Status struct {
	Spec  Spec  `json:"spec"`
	Phase Phase `json:"phase"`
	// ObservedGeneration is the spec generation the last complete pass brought the world to.
	ObservedGeneration uint64 `json:"observed_generation"`
	// TokenGeneration is the generation of the token recorded for the gateway.
	TokenGeneration uint64 `json:"token_generation"`
	// Rotating is true from a new token's creation until the registry holds it.
	Rotating bool `json:"rotating,omitempty"`
	// Upstream is where the gateway answers.
	Upstream string `json:"upstream,omitempty"`
	// Image is the image the gateway runs as far as the provisioner knows (its last
	// upgrade's outcome, else the spec's once reached), "" while unknown.
	Image string `json:"image,omitempty"`
	// Upgrade is its last image upgrade, if any (Provisioner.Upgrade).
	Upgrade *UpgradeStatus `json:"upgrade,omitempty"`
	// Steps are the plan's steps in order (reverse order while destroying).
	Steps []StepStatus `json:"steps"`
	// Outputs are the values steps recorded (ids, ports).
	Outputs map[string]string `json:"outputs,omitempty"`
	// Drift is what the periodic checks found changed behind moltgate's back, one entry per
	// step and kind, the latest kept.
	Drift []Drift `json:"drift,omitempty"`
	// Error is the last failed pass's error; Failures counts failed passes in a row.
	Error    string    `json:"error,omitempty"`
	Failures int       `json:"failures,omitempty"`
	Updated  time.Time `json:"updated,omitzero"`
}

// Drift is a difference a step's Check found between what the step made and what exists
// now (an image, a DNS target, a tunnel's ingress changed behind moltgate's back). The step
// then runs again: Repaired is set when it ended well; a step that will not touch what is
// there (a DNS record that is not moltgate's) fails instead, and its error says why.
type Drift struct {
	Step string `json:"step"`
	// Kind is a short fixed word ("image", "dns", "ingress"): it labels metrics.
	Kind string `json:"kind"`
	// Detail says what was found; never a secret.
	Detail   string    `json:"detail"`
	Found    time.Time `json:"found"`
	Repaired time.Time `json:"repaired,omitzero"`
}
