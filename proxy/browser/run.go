package browser

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"time"
)

// Run checks Clerk-bound sessions with Clerk every CheckInterval and ends the ones whose
// Clerk session is over, and ends idle and expired sessions, until ctx ends. It first loads
// the stored sessions, so those of before a restart are checked too.
func (s *Sessions) Run(ctx context.Context) error {
	_ = s.kv.ForEach(sessionsBucket, func(id string, _ []byte) error {
		_, _ = s.load(id)
		return nil
	})
	tick := time.NewTicker(max(s.cfg.CheckInterval/4, 250*time.Millisecond))
	defer tick.Stop()
	for {
		s.sweep(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// sweep ends what is over and checks with Clerk what is due.
func (s *Sessions) sweep(ctx context.Context) {
	now := s.cfg.Now()
	type due struct{ id, clerk string }
	var over, check []due
	s.mu.Lock()
	for id, l := range s.live {
		switch {
		case s.endReason(l.s, now) != "":
			over = append(over, due{id, s.endReason(l.s, now)})
		case l.s.ClerkSession != "" && s.clerk != nil && now.Sub(l.s.Checked) >= s.cfg.CheckInterval:
			check = append(check, due{id, l.s.ClerkSession})
		}
	}
	s.mu.Unlock()
	for _, d := range over {
		s.end(d.id, d.clerk)
	}
	// One call per Clerk session, however many gateways it signed in to.
	slices.SortFunc(check, func(a, b due) int { return cmp.Compare(a.clerk, b.clerk) })
	var active bool
	var err error
	for i, d := range check {
		if i == 0 || check[i-1].clerk != d.clerk {
			if ctx.Err() != nil {
				return
			}
			active, err = s.clerk.Active(ctx, d.clerk)
			s.m.checks.WithLabelValues(checkResult(active, err)).Inc()
			if err != nil {
				s.logger.LogAttrs(ctx, slog.LevelWarn, "browser: Clerk session check failed; sessions go on within the grace",
					slog.Any("err", err))
			}
		}
		switch {
		case err != nil:
		case !active:
			s.end(d.id, "clerk_session_ended")
		default:
			s.mu.Lock()
			if l, ok := s.live[d.id]; ok {
				l.s.Checked = now
			}
			s.mu.Unlock()
			s.persist(d.id)
		}
	}
}

func checkResult(active bool, err error) string {
	switch {
	case err != nil:
		return "error"
	case active:
		return "active"
	}
	return "ended"
}

func sortByCreated(ss []Session) {
	slices.SortFunc(ss, func(a, b Session) int { return a.Created.Compare(b.Created) })
}
