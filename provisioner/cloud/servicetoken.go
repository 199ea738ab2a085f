package cloud

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner/cloudflare"
	"github.com/moltgate/moltgate/store"
)

// Where moltgate's service token is kept: its ids in the clear, its secret sealed under
// the platform's own keystore tenant, bound to this record and purpose.
const (
	tokenBucket  = "provisioner.cloud"
	tokenKey     = "service_token"
	tokenTenant  = "moltgate"
	tokenRecord  = "provisioner/cloudflare/service-token"
	tokenPurpose = "cf-access-service-token"
)

// storedServiceToken is the service token as kept in the store.
type storedServiceToken struct {
	ID       string `json:"id"`
	ClientID string `json:"client_id"`
	Sealed   []byte `json:"sealed"`
}

// storedToken returns the kept service token, nil if there is none.
func (d *Driver) storedToken() (*storedServiceToken, error) {
	tok, _, err := d.loadToken()
	return tok, err
}

func (d *Driver) loadToken() (*storedServiceToken, []byte, error) {
	raw, err := d.deps.KV.Get(tokenBucket, tokenKey)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("cloud: read service token: %w", err)
	}
	var t storedServiceToken
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, nil, fmt.Errorf("cloud: decode service token: %w", err)
	}
	return &t, raw, nil
}

// AccessCredentials returns moltgate's service token as the headers a request to a
// gateway's hostname carries (CF-Access-Client-Id, CF-Access-Client-Secret), or
// cloudflare.ErrNotFound before the first gateway's Access step made it.
func (d *Driver) AccessCredentials() (clientID string, secret keystore.Secret, err error) {
	t, err := d.storedToken()
	if err != nil {
		return "", nil, err
	}
	if t == nil {
		return "", nil, fmt.Errorf("cloud: service token: %w", cloudflare.ErrNotFound)
	}
	s, err := d.deps.Sealer.Open(tokenTenant, tokenRecord, tokenPurpose, t.Sealed)
	if err != nil {
		return "", nil, fmt.Errorf("cloud: open service token: %w", err)
	}
	return t.ClientID, s, nil
}

// serviceToken returns the id of moltgate's service token, making one when none is kept,
// or when the kept one is gone from Cloudflare or no longer opens. Tokens of its name whose
// secret nobody holds are deleted first: nothing could present them.
func (d *Driver) serviceToken(ctx context.Context) (string, error) {
	d.tokenMu.Lock()
	defer d.tokenMu.Unlock()
	cf, name := d.deps.Cloudflare, d.cfg.ServiceTokenName
	kept, raw, err := d.loadToken()
	if err != nil {
		return "", err
	}
	listed, err := cf.ServiceTokens(ctx, name)
	if err != nil {
		return "", err
	}
	if kept != nil {
		s, oerr := d.deps.Sealer.Open(tokenTenant, tokenRecord, tokenPurpose, kept.Sealed)
		clear(s)
		if oerr == nil && slices.ContainsFunc(listed, func(t cloudflare.ServiceToken) bool { return t.ID == kept.ID }) {
			return kept.ID, nil
		}
	}
	for _, t := range listed {
		if err := cf.DeleteServiceTokenID(ctx, t.ID); err != nil {
			return "", err
		}
		d.deps.Logger.LogAttrs(ctx, slog.LevelWarn, "cloud: deleted a service token whose secret moltgate does not hold",
			slog.String("service_token", name), slog.String("id", t.ID))
	}
	tok, err := cf.EnsureServiceToken(ctx, name)
	if err != nil {
		return "", err
	}
	defer clear(tok.ClientSecret)
	if len(tok.ClientSecret) == 0 {
		return "", fmt.Errorf("cloud: service token %q appeared while it was made: retry", name)
	}
	sealed, err := d.deps.Sealer.Seal(tokenTenant, tokenRecord, tokenPurpose, tok.ClientSecret)
	if err != nil {
		return "", fmt.Errorf("cloud: seal service token: %w", err)
	}
	b, err := json.Marshal(storedServiceToken{ID: tok.ID, ClientID: tok.ClientID, Sealed: sealed})
	if err != nil {
		return "", err
	}
	if err := d.deps.KV.Swap(tokenBucket, tokenKey, raw, b); err != nil {
		// Another process kept one first (or the store failed): this one's secret is lost.
		if derr := cf.DeleteServiceTokenID(ctx, tok.ID); derr != nil {
			err = errors.Join(err, derr)
		}
		return "", fmt.Errorf("cloud: keep service token: %w", err)
	}
	d.deps.Logger.LogAttrs(ctx, slog.LevelInfo, "cloud: made and kept moltgate's service token",
		slog.String("service_token", name), slog.String("id", tok.ID))
	return tok.ID, nil
}

// Reseal implements keystore.Target for the kept service token, so that master and tenant
// key rotations cover its secret (a secret that no longer opens would make the driver
// replace the token, and every gateway's Access policy with it).
func (d *Driver) Reseal(ctx context.Context, fn keystore.ResealFunc) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		kept, raw, err := d.loadToken()
		if err != nil || kept == nil {
			return err
		}
		out, changed, err := fn(tokenTenant, tokenRecord, tokenPurpose, kept.Sealed)
		if err != nil {
			return fmt.Errorf("cloud: reseal service token: %w", err)
		}
		if !changed {
			return nil
		}
		kept.Sealed = out
		b, err := json.Marshal(kept)
		if err != nil {
			return err
		}
		if err := d.deps.KV.Swap(tokenBucket, tokenKey, raw, b); !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
}

// Quiesce implements keystore.Quiescer: a secret is sealed and stored under tokenMu, so once
// it is free every secret sealed before the call is stored, where the usage scan finds it.
func (d *Driver) Quiesce() {
	d.tokenMu.Lock()
	defer d.tokenMu.Unlock() //nolint:staticcheck // an empty critical section is the barrier
}

var (
	_ keystore.Target   = (*Driver)(nil)
	_ keystore.Quiescer = (*Driver)(nil)
)
