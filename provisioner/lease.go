package provisioner

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/moltgate/moltgate/store"
)

// lease is a gateway's lease, held (store.Leases): a holder that stops refreshing it (a dead
// process) loses it at its expiry, and the next pass, by any process, resumes its work.
type lease struct {
	*store.Lease
	id string
}

// acquire takes gateway id's lease, if it is free, expired, or this holder's own (a pass
// of this process that died in a test).
func (p *Provisioner) acquire(id string) (*lease, error) {
	l, err := p.leases.Acquire(id)
	if errors.Is(err, store.ErrLeaseHeld) {
		return nil, fmt.Errorf("%w: %s", ErrLeaseHeld, strings.TrimPrefix(err.Error(), store.ErrLeaseHeld.Error()+": "))
	}
	if err != nil {
		return nil, fmt.Errorf("provisioner: lease %q: %w", id, err)
	}
	return &lease{Lease: l, id: id}, nil
}

// keep refreshes the lease every third of its lifetime until stop is called. If a refresh
// fails (another holder took it, the store does not answer) it cancels the pass with
// ErrLeaseLost: better to stop than to act without it.
func (l *lease) keep(ctx context.Context, cancel context.CancelCauseFunc) (stop func()) {
	return l.Keep(ctx, func(err error) { cancel(fmt.Errorf("%w: %q: %w", ErrLeaseLost, l.id, err)) })
}

// release gives the lease up, if it is still this holder's; the lease of a gateway that is
// gone (its spec forgotten) goes with it.
func (l *lease) release(p *Provisioner) {
	if _, err := p.deps.KV.Get(specBucket, l.id); errors.Is(err, store.ErrNotFound) {
		l.Drop()
		return
	}
	l.Release()
}
