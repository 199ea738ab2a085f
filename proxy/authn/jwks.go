package authn

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/clerk/clerk-sdk-go/v2"
	"github.com/clerk/clerk-sdk-go/v2/jwks"
)

const (
	// fetchTimeout bounds one JWKS fetch, whatever the HTTP client's
	// own timeout.
	fetchTimeout = 10 * time.Second
	// maxFailureBackoff caps the wait after a failed fetch, so that a
	// short Clerk outage at start-up does not keep the proxy answering
	// 503 for a whole MinRefreshInterval.
	maxFailureBackoff = 5 * time.Second
	// maxJWKSBody bounds the JWKS response the SDK reads into memory
	// (it reads bodies without a limit). Clerk's is about 1 KiB.
	maxJWKSBody = 1 << 20
	// minRSABits is the smallest RSA key accepted from the JWKS.
	minRSABits = 2048
)

// keySet caches the instance's signing keys by kid and fetches the JWKS
// lazily: first when a token names a kid it does not hold, again on an
// unknown kid (key rotation) at most once per interval. Concurrent callers
// that miss share one fetch, and a flood of tokens with random kids causes
// at most one fetch per interval, not one per token.
type keySet struct {
	client   *jwks.Client
	now      func() time.Time
	interval time.Duration // min time between fetches after a success
	backoff  time.Duration // min time between fetches after a failure
	logger   *slog.Logger
	metrics  *metrics

	// fetching is a one-slot semaphore held by the goroutine that is
	// fetching; others wait on it (or on their context) and then find
	// the result in keys. A channel rather than a mutex so that a waiter
	// can give up when its request is cancelled.
	fetching chan struct{}

	mu        sync.RWMutex
	keys      map[string]*clerk.JSONWebKey // usable RS256 keys by kid
	attempted time.Time                    // start of the last fetch; zero: never
	lastErr   error                        // cause of the last fetch's failure; nil after a success
}

// get returns the key with kid, fetching the JWKS if kid is unknown and
// the rate limit allows. It fails with ErrUnknownKey if the JWKS does not
// hold kid and with ErrKeysUnavailable if the JWKS cannot be fetched or ctx
// ends first.
func (k *keySet) get(ctx context.Context, kid string) (*clerk.JSONWebKey, error) {
	if key := k.lookup(kid); key != nil {
		return key, nil
	}
	if err := k.acquire(ctx); err != nil {
		return nil, err
	}
	// Another caller may have fetched while this one waited.
	if key := k.lookup(kid); key != nil {
		k.release()
		return key, nil
	}
	now := k.now()
	k.mu.RLock()
	attempted, lastErr := k.attempted, k.lastErr
	k.mu.RUnlock()
	if !attempted.IsZero() {
		wait := k.interval
		if lastErr != nil {
			wait = k.backoff
		}
		// A clock that went backwards does not block fetches forever.
		if since := now.Sub(attempted); since >= 0 && since < wait {
			k.release()
			if lastErr != nil {
				return nil, fail(ReasonKeysUnavailable, lastErr)
			}
			return nil, fail(ReasonUnknownKey, nil)
		}
	}
	if err := k.fetchAndRelease(ctx, now); err != nil {
		return nil, err
	}
	if key := k.lookup(kid); key != nil {
		return key, nil
	}
	return nil, fail(ReasonUnknownKey, nil)
}

// refresh fetches the JWKS now, ignoring the rate limit.
func (k *keySet) refresh(ctx context.Context) error {
	if err := k.acquire(ctx); err != nil {
		return err
	}
	return k.fetchAndRelease(ctx, k.now())
}

// acquire takes the fetching slot, or gives up when ctx ends.
func (k *keySet) acquire(ctx context.Context) error {
	select {
	case k.fetching <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fail(ReasonKeysUnavailable, ctx.Err())
	}
}

func (k *keySet) release() { <-k.fetching }

// fetchAndRelease fetches the JWKS and then releases the fetching slot,
// which the caller holds. The fetch runs in its own goroutine, bounded by
// fetchTimeout, because it serves every caller waiting for the slot: the
// caller that happened to start it returns when its ctx ends, without
// failing the fetch for the others.
func (k *keySet) fetchAndRelease(ctx context.Context, now time.Time) error {
	done := make(chan error, 1)
	fctx := context.WithoutCancel(ctx)
	go func() {
		defer k.release()
		done <- k.fetch(fctx, now)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fail(ReasonKeysUnavailable, ctx.Err())
	}
}

func (k *keySet) lookup(kid string) *clerk.JSONWebKey {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.keys[kid]
}

// fetch fetches the JWKS and replaces the cached keys with it, so that a
// key Clerk stops publishing stops verifying. A failed or empty fetch keeps
// the old keys. The caller holds the fetching slot.
func (k *keySet) fetch(ctx context.Context, now time.Time) error {
	fctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	set, err := k.client.Get(fctx, &jwks.GetParams{})
	var keys map[string]*clerk.JSONWebKey
	if err == nil {
		keys, err = usableKeys(set)
	} else {
		err = fetchError(err)
	}

	k.mu.Lock()
	k.attempted = now
	k.lastErr = err
	if err == nil {
		k.keys = keys
	}
	k.mu.Unlock()

	if err != nil {
		k.metrics.refreshError.Inc()
		k.logger.LogAttrs(ctx, slog.LevelWarn, "jwks refresh failed",
			slog.String("result", "error"), slog.String("error", err.Error()))
		return fail(ReasonKeysUnavailable, err)
	}
	k.metrics.refreshOK.Inc()
	k.logger.LogAttrs(ctx, slog.LevelInfo, "jwks refreshed",
		slog.String("result", "ok"), slog.Int("keys", len(keys)))
	return nil
}

// usableKeys keeps the keys that can verify Clerk session tokens: RSA
// public keys of at least 2048 bits published for RS256 signatures.
func usableKeys(set *clerk.JSONWebKeySet) (map[string]*clerk.JSONWebKey, error) {
	keys := map[string]*clerk.JSONWebKey{}
	if set != nil {
		for _, key := range set.Keys {
			if key == nil || key.KeyID == "" || key.Algorithm != "RS256" ||
				(key.Use != "" && key.Use != "sig") {
				continue
			}
			pub, ok := key.Key.(*rsa.PublicKey)
			if !ok || pub.N.BitLen() < minRSABits {
				continue
			}
			keys[key.KeyID] = key
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("jwks: no usable RS256 key")
	}
	return keys, nil
}

// fetchError describes a failed fetch without echoing a whole response
// body (the SDK returns non-Clerk error bodies verbatim).
func fetchError(err error) error {
	var apiErr *clerk.APIErrorResponse
	if errors.As(err, &apiErr) {
		return fmt.Errorf("jwks: clerk api status %d", apiErr.HTTPStatusCode)
	}
	const max = 200
	if msg := err.Error(); len(msg) > max {
		return fmt.Errorf("jwks: %s…", strings.ToValidUTF8(msg[:max], ""))
	}
	return fmt.Errorf("jwks: %w", err)
}

// limitBody caps the size of response bodies read through it.
type limitBody struct{ base http.RoundTripper }

func (t limitBody) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = http.MaxBytesReader(nil, resp.Body, maxJWKSBody)
	return resp, nil
}
