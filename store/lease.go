package store

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
)

// ErrLeaseHeld is returned by Leases.Acquire while another holder keeps the lease.
var ErrLeaseHeld = errors.New("store: lease held by another holder")

// LeaseKV is what a lease needs of a store: a read, and a compare-and-swap.
type LeaseKV interface {
	Get(bucket, key string) ([]byte, error)
	Swap(bucket, key string, old, new []byte) error
}

// LeaseRecord is who holds a lease, until when. Token is the fencing token: it grows by one
// at every new holder, so a record written under a lease can carry the token it was written
// under and a holder that lost its lease can be told from the one that took it over.
type LeaseRecord struct {
	Holder  string    `json:"holder"`
	Token   uint64    `json:"token,omitempty"`
	Expires time.Time `json:"expires"`
}

// Leases hands out leases on the keys of one bucket of a store that processes share: one
// holder at a time per key, and a key whose holder stopped renewing (it died) free again
// once its lease expires.
type Leases struct {
	// KV holds the leases. Required.
	KV LeaseKV
	// Bucket holds the leases, one per key. Required.
	Bucket string
	// Holder names this process in the leases. Default DefaultHolder().
	Holder string
	// TTL is how long a lease outlives its last renewal. Default 30s.
	TTL time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// DefaultHolder names this process in leases: host name, process id, random suffix.
func DefaultHolder() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
}

func (ls *Leases) defaults() {
	if ls.Holder == "" {
		ls.Holder = DefaultHolder()
	}
	if ls.TTL <= 0 {
		ls.TTL = 30 * time.Second
	}
	if ls.Now == nil {
		ls.Now = time.Now
	}
}

// Acquire takes the lease on key if it is free, expired (its holder died, or stopped keeping
// it) or this holder's own, with a greater fencing token than the last. A lease another holder
// keeps is ErrLeaseHeld, naming the holder and until when.
func (ls *Leases) Acquire(key string) (*Lease, error) {
	ls.defaults()
	for range 8 {
		cur, err := ls.KV.Get(ls.Bucket, key)
		var prev LeaseRecord
		switch {
		case errors.Is(err, ErrNotFound):
			cur = nil
		case err != nil:
			return nil, fmt.Errorf("store: read lease %s/%s: %w", ls.Bucket, key, err)
		default:
			if json.Unmarshal(cur, &prev) == nil && prev.Holder != ls.Holder && ls.Now().Before(prev.Expires) {
				return nil, fmt.Errorf("%w: %s/%s by %s until %s", ErrLeaseHeld, ls.Bucket, key, prev.Holder,
					prev.Expires.UTC().Format(time.RFC3339))
			}
		}
		l := &Lease{ls: *ls, key: key, rec: LeaseRecord{Holder: ls.Holder, Token: prev.Token + 1}}
		if err := l.swap(cur); errors.Is(err, ErrConflict) {
			continue // another holder took or renewed it first: look again
		} else if err != nil {
			return nil, err
		}
		return l, nil
	}
	return nil, fmt.Errorf("%w: %s/%s (contended)", ErrLeaseHeld, ls.Bucket, key)
}

// Lease is a lease this process holds.
type Lease struct {
	ls  Leases
	key string
	rec LeaseRecord
	// raw is the stored record: the compare of the next swap.
	raw []byte
	mu  sync.Mutex
}

// Token is the lease's fencing token.
func (l *Lease) Token() uint64 { return l.rec.Token }

// swap writes the lease, renewed, over old.
func (l *Lease) swap(old []byte) error {
	l.rec.Expires = l.ls.Now().Add(l.ls.TTL).UTC()
	b, _ := json.Marshal(l.rec)
	if err := l.ls.KV.Swap(l.ls.Bucket, l.key, old, b); err != nil {
		if errors.Is(err, ErrConflict) {
			return err
		}
		return fmt.Errorf("store: write lease %s/%s: %w", l.ls.Bucket, l.key, err)
	}
	l.raw = b
	return nil
}

// Renew extends the lease by its TTL. An error wrapping ErrConflict means another holder has
// taken it over; any other, that the store did not answer (the lease may still be this
// holder's: renewing again may succeed).
func (l *Lease) Renew() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.swap(l.raw)
}

// Keep renews the lease every third of its TTL until the returned stop is called, and calls
// lost with the error of the first renewal that fails (the holder should then stop what it
// does under the lease: better to stop than to go on without it).
func (l *Lease) Keep(ctx context.Context, lost func(error)) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(l.ls.TTL / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if err := l.Renew(); err != nil {
					lost(err)
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

// Release gives the lease up, if it is still this holder's; if that fails, it expires. The
// record stays, expired, so that the next holder's fencing token is still greater.
func (l *Lease) Release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, _ := json.Marshal(LeaseRecord{Token: l.rec.Token})
	_ = l.ls.KV.Swap(l.ls.Bucket, l.key, l.raw, b)
}

// Drop gives the lease up and removes its record, if it is still this holder's: for a key
// whose work is gone for good (no later holder has writes to fence off).
func (l *Lease) Drop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	_ = l.ls.KV.Swap(l.ls.Bucket, l.key, l.raw, nil)
}
