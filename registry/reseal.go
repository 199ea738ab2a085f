package registry

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/moltgate/moltgate/keystore"
)

// Reseal implements keystore.Target for the gateway tokens, so a master or tenant key rotation
// covers them. Each gateway whose sealed token fn changes is written to the store and to memory
// under the registry's write lock, so a concurrent Update cannot write the old ciphertext back.
// The gateway's revision does not change: nothing a user set has.
func (r *Registry) Reseal(ctx context.Context, fn keystore.ResealFunc) error {
	for _, g := range r.List() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := r.resealOne(g.ID, fn); err != nil {
			return err
		}
	}
	return nil
}

func (r *Registry) resealOne(id string, fn keystore.ResealFunc) error {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	e, ok := r.Lookup(id)
	if !ok {
		return nil // deleted meanwhile
	}
	out, changed, err := fn(e.Tenant, tokenRecord(e.ID), tokenPurpose, e.TokenSealed)
	if err != nil {
		return fmt.Errorf("registry: reseal token of %q: %w", id, err)
	}
	if !changed {
		return nil
	}
	g := e.Gateway.clone()
	g.TokenSealed = out
	v, err := json.Marshal(g)
	if err != nil {
		return fmt.Errorf("registry: encode %q: %w", id, err)
	}
	if err := r.kv.Put(bucket, id, v); err != nil {
		return fmt.Errorf("registry: write %q: %w", id, err)
	}
	ne := *e
	ne.Gateway = g
	r.mu.Lock()
	r.byID[id] = &ne
	r.mu.Unlock()
	return nil
}

// Quiesce implements keystore.Quiescer: Create and Update seal a token and store it under
// writeMu, so once writeMu is free every token sealed before the call is stored (and in List).
func (r *Registry) Quiesce() {
	r.writeMu.Lock()
	defer r.writeMu.Unlock() //nolint:staticcheck // an empty critical section is the barrier
}

var (
	_ keystore.Target   = (*Registry)(nil)
	_ keystore.Quiescer = (*Registry)(nil)
)
