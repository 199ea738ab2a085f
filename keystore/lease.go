package keystore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/moltgate/moltgate/store"
)

// leaseBucket holds the leases of rotation jobs, by job record key: one process at a time
// runs a job, whichever process started it, across every process sharing the store.
const leaseBucket = "keystore.rotation.leases"

// ErrLeaseLost cancels a job whose lease this process could not keep (another holder took
// it, or the store did not answer): better to stop than to go on without it.
var ErrLeaseLost = errors.New("keystore: rotation lease lost")

// jobLease is who runs a job, until when. Token is the fencing token: it grows by one at
// every new holder, and the job record carries the token of the run that wrote it last.
type jobLease struct {
	Holder  string    `json:"holder"`
	Token   uint64    `json:"token"`
	Expires time.Time `json:"expires"`
}

// defaultHolder names this process in leases: host name, process id, random suffix.
func defaultHolder() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
}

// heldLease is a lease this process holds: raw is the stored value, the compare of the next
// swap.
type heldLease struct {
	r     *Rotator
	key   string
	lease jobLease
	raw   []byte
}

// acquire takes the lease of job record key if it is free or expired (its holder died, or
// stopped keeping it); held reports another live holder.
func (r *Rotator) acquire(key string) (l *heldLease, held bool, err error) {
	for range 8 {
		cur, err := r.cfg.KV.Get(leaseBucket, key)
		var prev jobLease
		switch {
		case errors.Is(err, store.ErrNotFound):
			cur = nil
		case err != nil:
			return nil, false, fmt.Errorf("keystore: read rotation lease: %w", err)
		default:
			if json.Unmarshal(cur, &prev) == nil && prev.Holder != r.cfg.Holder && r.cfg.Now().Before(prev.Expires) {
				return nil, true, nil
			}
		}
		l := &heldLease{r: r, key: key, lease: jobLease{Holder: r.cfg.Holder, Token: prev.Token + 1}}
		if err := l.swap(cur); errors.Is(err, store.ErrConflict) {
			continue // another process took or renewed it first: look again
		} else if err != nil {
			return nil, false, err
		}
		return l, false, nil
	}
	return nil, true, nil
}

// swap writes the lease, renewed, over old.
func (l *heldLease) swap(old []byte) error {
	l.lease.Expires = l.r.cfg.Now().Add(l.r.cfg.LeaseTTL).UTC()
	b, _ := json.Marshal(l.lease)
	if err := l.r.cfg.KV.Swap(leaseBucket, l.key, old, b); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return err
		}
		return fmt.Errorf("keystore: write rotation lease: %w", err)
	}
	l.raw = b
	return nil
}

// keep renews the lease every third of its lifetime until the returned stop is called, and
// cancels the job (ErrLeaseLost) if a renewal fails. stop then gives the lease up.
func (l *heldLease) keep(ctx context.Context, cancel context.CancelCauseFunc) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(l.r.cfg.LeaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if err := l.swap(l.raw); err != nil {
					cancel(fmt.Errorf("%w: %v", ErrLeaseLost, err))
					return
				}
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		_ = l.r.cfg.KV.Swap(leaseBucket, l.key, l.raw, nil) // if this fails it expires
	}
}
