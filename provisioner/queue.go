package provisioner

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"
)

// queue holds the gateways due for a pass, each at most once, and never hands one out while
// a worker has it: a wake during a pass schedules one more pass after it.
type queue struct {
	mu       sync.Mutex
	due      map[string]time.Time
	busy     map[string]bool
	again    map[string]bool
	failures map[string]int
	kick     chan struct{}
}

func newQueue() *queue {
	return &queue{due: map[string]time.Time{}, busy: map[string]bool{}, again: map[string]bool{},
		failures: map[string]int{}, kick: make(chan struct{}, 1)}
}

// add schedules a pass over id at at (or earlier, if one is scheduled earlier).
func (q *queue) add(id string, at time.Time) {
	q.mu.Lock()
	if q.busy[id] {
		q.again[id] = true
	} else if cur, ok := q.due[id]; !ok || at.Before(cur) {
		q.due[id] = at
	}
	q.mu.Unlock()
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// next waits for a gateway that is due and not busy, and marks it busy.
func (q *queue) next(ctx context.Context) (string, bool) {
	for {
		q.mu.Lock()
		now := time.Now()
		var id string
		var soonest time.Time
		for k, at := range q.due {
			if !at.After(now) && (id == "" || at.Before(q.due[id])) {
				id = k
			}
			if soonest.IsZero() || at.Before(soonest) {
				soonest = at
			}
		}
		if id != "" {
			delete(q.due, id)
			q.busy[id] = true
			q.mu.Unlock()
			return id, true
		}
		q.mu.Unlock()
		wait := time.Hour
		if !soonest.IsZero() {
			wait = time.Until(soonest)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", false
		case <-q.kick:
		case <-t.C:
		}
		t.Stop()
	}
}

// done ends id's pass. A failed pass is retried after a backoff that doubles with each
// failure in a row, from one second up to five minutes; a lease held elsewhere after retry.
func (q *queue) done(id string, err error, retry time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.busy, id)
	at := time.Time{}
	switch {
	case err == nil:
		delete(q.failures, id)
	case errors.Is(err, ErrLeaseHeld):
		at = time.Now().Add(retry)
	default:
		q.failures[id]++
		at = time.Now().Add(min(time.Second<<min(q.failures[id]-1, 9), 5*time.Minute))
	}
	if q.again[id] {
		delete(q.again, id)
		at = time.Now()
	}
	if !at.IsZero() {
		if cur, ok := q.due[id]; !ok || at.Before(cur) {
			q.due[id] = at
		}
	}
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// Run reconciles until ctx ends: every gateway at start (resuming whatever a previous
// process left pending), every gateway woken (Apply, Destroy, RotateToken, a driver that saw
// a process die), and every gateway again each ResyncInterval. It returns when its workers
// have stopped.
func (p *Provisioner) Run(ctx context.Context) error {
	p.resync()
	var wg sync.WaitGroup
	for range p.cfg.Workers {
		wg.Go(func() {
			for {
				id, ok := p.q.next(ctx)
				if !ok {
					return
				}
				err := p.Reconcile(ctx, id)
				p.q.done(id, err, p.cfg.LeaseTTL)
			}
		})
	}
	t := time.NewTicker(p.cfg.ResyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-t.C:
			p.resync()
		}
	}
}

// resync schedules every gateway, and restores the token overlaps of rotations in flight.
func (p *Provisioner) resync() {
	now := time.Now()
	_ = p.deps.KV.ForEach(specBucket, func(id string, v []byte) error {
		var s Spec
		if json.Unmarshal(v, &s) == nil {
			p.q.add(id, now)
		}
		return nil
	})
	_ = p.deps.KV.ForEach(statusBucket, func(id string, v []byte) error {
		var rec record
		if json.Unmarshal(v, &rec) == nil {
			p.ovl.note(p, &pass{spec: Spec{ID: id, Tenant: rec.Tenant}, rec: &rec})
		}
		return nil
	})
}
