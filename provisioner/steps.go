package provisioner

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	"github.com/moltgate/moltgate/proxy/authn"
	"github.com/moltgate/moltgate/registry"
)

// The core's steps: "token" first, "register" and "probe" after the driver's.
type (
	tokenStep    struct{ p *Provisioner }
	registerStep struct{ p *Provisioner }
	probeStep    struct{ p *Provisioner }
)

func (tokenStep) Name() string    { return "token" }
func (registerStep) Name() string { return "register" }
func (probeStep) Name() string    { return "probe" }

// Check: a token of the spec's generation is recorded.
func (tokenStep) Check(_ context.Context, r *Run) (bool, error) {
	t := r.st.rec.Token
	return t != nil && t.Generation == r.Spec.TokenGeneration, nil
}

// Ensure generates the gateway token (32 random bytes, hex) and keeps it sealed in the
// status, written with the step's end: nothing uses a token before it is stored, so a
// token lost to a crash here was never handed out. The token it replaces is kept as
// PrevToken until the registry holds the new one.
func (s tokenStep) Ensure(ctx context.Context, r *Run) error {
	if ok, _ := s.Check(ctx, r); ok {
		return nil
	}
	tok, err := authn.NewGatewayToken()
	if err != nil {
		return err
	}
	// Held until the status holding the sealed token is written (released by the write,
	// or when the pass ends): key rotation's Quiesce waits for it.
	s.p.sealing.RLock()
	r.st.unlock = s.p.sealing.RUnlock
	sealed, err := s.p.deps.Sealer.Seal(r.Spec.Tenant, tokenRecord(r.Spec.ID), tokenPurpose, []byte(tok))
	if err != nil {
		return fmt.Errorf("seal token: %w", err)
	}
	rec := r.st.rec
	// A rotation asked for while another is unfinished keeps the oldest token as the one
	// requests may still carry.
	if rec.Token != nil && rec.PrevToken == nil {
		rec.PrevToken = rec.Token
	}
	rec.Token = &sealedToken{Generation: r.Spec.TokenGeneration, Sealed: sealed}
	clear(r.st.token)
	r.st.token = []byte(tok)
	return nil
}

// Destroy drops the tokens; the registry record that used them is gone already.
func (tokenStep) Destroy(_ context.Context, r *Run) error {
	r.st.rec.Token, r.st.rec.PrevToken = nil, nil
	return nil
}

// Check: the registry holds the gateway as the spec asks, at the upstream the driver set,
// with the current token.
func (s registerStep) Check(_ context.Context, r *Run) (bool, error) {
	g, err := s.p.deps.Registry.Get(r.Spec.ID)
	if errors.Is(err, registry.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return g.Tenant == r.Spec.Tenant && g.Owner == r.Spec.Owner && g.Upstream == r.Upstream() &&
		g.AuthMode == registry.AuthToken && tokenIs(g, r.Token()), nil
}

// Ensure registers the gateway in token mode at the driver's upstream, or adopts the
// registry's record of it (one left by a pass that died before recording its end) and
// brings it in line: owner, upstream, then token, each a single registry change.
func (s registerStep) Ensure(ctx context.Context, r *Run) error {
	reg := s.p.deps.Registry
	up, tok := r.Upstream(), r.Token()
	if up == "" {
		return errors.New("no upstream: the driver's steps set none")
	}
	if tok == nil {
		return errors.New("no token")
	}
	g, err := reg.Get(r.Spec.ID)
	if errors.Is(err, registry.ErrNotFound) {
		g, err = reg.Create(ctx, registry.Gateway{ID: r.Spec.ID, Tenant: r.Spec.Tenant, Owner: r.Spec.Owner,
			Upstream: up, AuthMode: registry.AuthToken}, string(tok))
		if err == nil {
			return nil
		}
		if !errors.Is(err, registry.ErrExists) {
			return err
		}
		g, err = reg.Get(r.Spec.ID)
	}
	if err != nil {
		return err
	}
	if g.Tenant != r.Spec.Tenant {
		// Never adopt another tenant's record: that would route this tenant's gateway to it.
		return fmt.Errorf("%w: %q is registered for another tenant", ErrExists, r.Spec.ID)
	}
	if g.Owner != r.Spec.Owner || g.Upstream != up || g.AuthMode != registry.AuthToken {
		if _, err := reg.Update(ctx, r.Spec.ID, func(g *registry.Gateway) error {
			g.Owner, g.Upstream, g.AuthMode = r.Spec.Owner, up, registry.AuthToken
			return nil
		}); err != nil {
			return err
		}
	}
	if !tokenIs(g, tok) {
		if _, err := reg.SetToken(ctx, r.Spec.ID, string(tok)); err != nil {
			return err
		}
	}
	return nil
}

// Destroy removes the registry record, if it is this tenant's.
func (s registerStep) Destroy(ctx context.Context, r *Run) error {
	g, err := s.p.deps.Registry.Get(r.Spec.ID)
	if errors.Is(err, registry.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if g.Tenant != r.Spec.Tenant {
		return nil
	}
	if err := s.p.deps.Registry.Delete(ctx, r.Spec.ID); err != nil && !errors.Is(err, registry.ErrNotFound) {
		return err
	}
	return nil
}

func tokenIs(g registry.Gateway, tok []byte) bool {
	if tok == nil {
		return false
	}
	h := registry.HashToken(string(tok))
	return subtle.ConstantTimeCompare(g.TokenHash, h[:]) == 1
}

const probeEvery = 250 * time.Millisecond

// Check: the gateway answers through moltgate now.
func (s probeStep) Check(ctx context.Context, r *Run) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return s.p.cfg.Probe(cctx, r.Spec.ID, r.Token()) == nil, nil
}

// Ensure waits, up to Config.ProbeTimeout, until the gateway answers through moltgate.
func (s probeStep) Ensure(ctx context.Context, r *Run) error {
	ctx, cancel := context.WithTimeout(ctx, s.p.cfg.ProbeTimeout)
	defer cancel()
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		err := s.p.cfg.Probe(cctx, r.Spec.ID, r.Token())
		ccancel()
		if err == nil {
			return nil
		}
		t := time.NewTimer(probeEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("not answering through moltgate after %s: %w", s.p.cfg.ProbeTimeout, err)
		case <-t.C:
		}
	}
}

// Destroy: nothing to remove.
func (probeStep) Destroy(context.Context, *Run) error { return nil }
