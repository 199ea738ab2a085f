package provisioner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/store"
)

// Reseal implements keystore.Target for the gateway tokens in the statuses, so master and
// tenant key rotations cover them. Each status is changed by compare-and-swap: a pass that
// wrote it meanwhile makes Reseal read it again, and a pass that writes after Reseal finds
// its own compare stale and stops (its next pass starts from the resealed record).
func (p *Provisioner) Reseal(ctx context.Context, fn keystore.ResealFunc) error {
	var ids []string
	if err := p.deps.KV.ForEach(statusBucket, func(id string, _ []byte) error { ids = append(ids, id); return nil }); err != nil {
		return err
	}
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := p.resealOne(id, fn); err != nil {
			return err
		}
	}
	return nil
}

func (p *Provisioner) resealOne(id string, fn keystore.ResealFunc) error {
	for {
		rec, raw, err := p.loadRecord(id)
		if err != nil || raw == nil {
			return err
		}
		changed := false
		for _, t := range []*sealedToken{rec.Token, rec.PrevToken} {
			if t == nil {
				continue
			}
			out, ch, err := fn(rec.Tenant, tokenRecord(id), tokenPurpose, t.Sealed)
			if err != nil {
				return fmt.Errorf("provisioner: reseal token of %q: %w", id, err)
			}
			if ch {
				t.Sealed, changed = out, true
			}
		}
		if !changed {
			return nil
		}
		b, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		err = p.deps.KV.Swap(statusBucket, id, raw, b)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		return err
	}
}

// Quiesce implements keystore.Quiescer: a new token is sealed under sealing (read) until the
// status holding it is written, so once sealing is free every token sealed before the call
// is in a status, where the usage scan finds it.
func (p *Provisioner) Quiesce() {
	p.sealing.Lock()
	defer p.sealing.Unlock() //nolint:staticcheck // an empty critical section is the barrier
}

var (
	_ keystore.Target   = (*Provisioner)(nil)
	_ keystore.Quiescer = (*Provisioner)(nil)
)
