package provisioner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/moltgate/moltgate/store"
)

// leaseRecord is who works on a gateway, until when. A holder that stops refreshing (a dead
// process) loses it at Expires, and the next pass, by any process, resumes its work.
type leaseRecord struct {
	Holder  string    `json:"holder"`
	Expires time.Time `json:"expires"`
}

// lease is a held lease: raw is the stored value, the compare of the next swap.
type lease struct {
	p   *Provisioner
	id  string
	raw []byte
}

// acquire takes gateway id's lease, if it is free, expired, or this holder's own (a pass
// of this process that died in a test).
func (p *Provisioner) acquire(id string) (*lease, error) {
	for {
		cur, err := p.deps.KV.Get(leaseBucket, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			cur = nil
		case err != nil:
			return nil, fmt.Errorf("provisioner: read lease %q: %w", id, err)
		default:
			var lr leaseRecord
			if err := json.Unmarshal(cur, &lr); err == nil && lr.Holder != p.cfg.Holder && p.deps.Now().Before(lr.Expires) {
				return nil, fmt.Errorf("%w: %q until %s", ErrLeaseHeld, id, lr.Expires.UTC().Format(time.RFC3339))
			}
		}
		l := &lease{p: p, id: id}
		if err := l.swap(cur); errors.Is(err, store.ErrConflict) {
			continue // someone else took or refreshed it first: look again
		} else if err != nil {
			return nil, err
		}
		return l, nil
	}
}

// swap writes a fresh lease over old.
func (l *lease) swap(old []byte) error {
	b, err := json.Marshal(leaseRecord{Holder: l.p.cfg.Holder, Expires: l.p.deps.Now().Add(l.p.cfg.LeaseTTL).UTC()})
	if err != nil {
		return err
	}
	if err := l.p.deps.KV.Swap(leaseBucket, l.id, old, b); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return err
		}
		return fmt.Errorf("provisioner: write lease %q: %w", l.id, err)
	}
	l.raw = b
	return nil
}

// keep refreshes the lease every third of its lifetime until stop is called. If a refresh
// fails (another holder took it, the store does not answer) it cancels the pass with
// ErrLeaseLost: better to stop than to act without it.
func (l *lease) keep(ctx context.Context, cancel context.CancelCauseFunc) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(l.p.cfg.LeaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if err := l.swap(l.raw); err != nil {
					cancel(fmt.Errorf("%w: %q: %w", ErrLeaseLost, l.id, err))
					return
				}
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// release gives the lease up, if it is still this holder's.
func (l *lease) release() {
	_ = l.p.deps.KV.Swap(leaseBucket, l.id, l.raw, nil)
}
