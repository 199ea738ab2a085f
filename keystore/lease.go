package keystore

import (
	"context"
	"errors"
	"fmt"

	"github.com/moltgate/moltgate/store"
)

// leaseBucket holds the leases of rotation jobs, by job record key: one process at a time
// runs a job, whichever process started it, across every process sharing the store.
const leaseBucket = "keystore.rotation.leases"

// ErrLeaseLost cancels a job whose lease this process could not keep (another holder took
// it, or the store did not answer): better to stop than to go on without it.
var ErrLeaseLost = errors.New("keystore: rotation lease lost")

// acquire takes the lease of job record key if it is free or expired (its holder died, or
// stopped keeping it); held reports another live holder.
func (r *Rotator) acquire(key string) (l *store.Lease, held bool, err error) {
	l, err = r.leases.Acquire(key)
	if errors.Is(err, store.ErrLeaseHeld) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("keystore: rotation lease: %w", err)
	}
	return l, false, nil
}

// keep renews l until the returned stop is called, and cancels the job (ErrLeaseLost) if a
// renewal fails. stop then gives the lease up.
func keep(ctx context.Context, l *store.Lease, cancel context.CancelCauseFunc) (stop func()) {
	stopKeeping := l.Keep(ctx, func(err error) { cancel(fmt.Errorf("%w: %v", ErrLeaseLost, err)) })
	return func() {
		stopKeeping()
		l.Release()
	}
}
