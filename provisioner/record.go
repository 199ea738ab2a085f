package provisioner

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/store"
)

// record is a gateway's status as stored: written only by the holder of its lease, each
// write a compare-and-swap against the bytes the pass last read or wrote.
type record struct {
	// Tenant is the spec's, so key rotation can reseal the tokens without the spec.
	Tenant             string            `json:"tenant"`
	ObservedGeneration uint64            `json:"observed_generation"`
	Steps              []StepStatus      `json:"steps,omitempty"`
	Upstream           string            `json:"upstream,omitempty"`
	Outputs            map[string]string `json:"outputs,omitempty"`
	// Token is the gateway token of the spec's generation, sealed; PrevToken the one it
	// replaces, kept from a rotation's start until the registry holds Token.
	Token     *sealedToken `json:"token,omitempty"`
	PrevToken *sealedToken `json:"prev_token,omitempty"`
	Drift     []Drift      `json:"drift,omitempty"`
	Error     string       `json:"error,omitempty"`
	Failures  int          `json:"failures,omitempty"`
	// Upgrade is the gateway's last image upgrade (upgrade.go).
	Upgrade *UpgradeStatus `json:"upgrade,omitempty"`
	Updated time.Time      `json:"updated,omitzero"`
	// Fence is the fencing token of the lease of the pass that wrote the record last: a pass
	// stamps its own at its start, so a pass whose lease was taken over meanwhile finds a
	// greater one and writes nothing more (ErrLeaseLost).
	Fence uint64 `json:"fence,omitempty"`
}

type sealedToken struct {
	Generation uint64 `json:"generation"`
	Sealed     []byte `json:"sealed"`
}

// Gateway tokens are sealed under the gateway's tenant, bound to this record name and
// purpose (AES-GCM additional data): a sealed token moved to another gateway does not open.
const tokenPurpose = "gateway-token"

func tokenRecord(id string) string { return "provisioner/" + id + "/token" }

func (r *record) step(name string) *StepStatus {
	for i := range r.Steps {
		if r.Steps[i].Name == name {
			return &r.Steps[i]
		}
	}
	return nil
}

// setStep returns the record of step name, adding it (in plan order: appended) if missing.
func (r *record) setStep(name string) *StepStatus {
	if s := r.step(name); s != nil {
		return s
	}
	r.Steps = append(r.Steps, StepStatus{Name: name})
	return &r.Steps[len(r.Steps)-1]
}

func (r *record) dropStep(name string) {
	for i := range r.Steps {
		if r.Steps[i].Name == name {
			r.Steps = append(r.Steps[:i], r.Steps[i+1:]...)
			return
		}
	}
}

func (p *Provisioner) loadRecord(id string) (*record, []byte, error) {
	raw, err := p.deps.KV.Get(statusBucket, id)
	if errors.Is(err, store.ErrNotFound) {
		return &record{}, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("provisioner: read status %q: %w", id, err)
	}
	var r record
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, nil, fmt.Errorf("provisioner: decode status %q: %w", id, err)
	}
	return &r, raw, nil
}

func (p *Provisioner) openToken(id, tenant string, t *sealedToken) (keystore.Secret, error) {
	if t == nil {
		return nil, nil
	}
	b, err := p.deps.Sealer.Open(tenant, tokenRecord(id), tokenPurpose, t.Sealed)
	if err != nil {
		return nil, fmt.Errorf("provisioner: open token of %q: %w", id, err)
	}
	return b, nil
}

// noteDrift keeps d as the latest finding of its step and kind, and reports whether it is
// new: the same finding not repaired since is kept as first found.
func (r *record) noteDrift(d Drift) bool {
	for i := range r.Drift {
		if r.Drift[i].Step == d.Step && r.Drift[i].Kind == d.Kind {
			if r.Drift[i].Detail == d.Detail && r.Drift[i].Repaired.IsZero() {
				return false
			}
			r.Drift[i] = d
			return true
		}
	}
	r.Drift = append(r.Drift, d)
	return true
}

// repaired marks the unrepaired findings of step as repaired at t.
func (r *record) repaired(step string, t time.Time) {
	for i := range r.Drift {
		if r.Drift[i].Step == step && r.Drift[i].Repaired.IsZero() {
			r.Drift[i].Repaired = t
		}
	}
}
