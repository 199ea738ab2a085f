package keystore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Verifier checks a key with its provider: nil if the provider accepts it, an error wrapping
// ErrKeyRejected if the provider refuses it, another error if the check could not be made.
// Errors never contain the key.
type Verifier interface {
	Verify(ctx context.Context, provider string, kind Kind, secret Secret) error
}

// Endpoint is how HTTPVerifier checks one provider's key: a GET that needs the key and
// nothing else (listing models, reading the bot's own user).
type Endpoint struct {
	// URL is requested with GET. It must not contain the key.
	URL string
	// Header carries the key, with Prefix before it ("Authorization", "Bearer ").
	Header, Prefix string
	// Extra headers the provider requires (anthropic-version).
	Extra map[string]string
}

// DefaultEndpoints are the providers' real endpoints. Telegram is absent on purpose: its API
// puts the bot token in the URL path, where proxies and error messages would record it.
func DefaultEndpoints() map[string]Endpoint {
	return map[string]Endpoint{
		"anthropic": {URL: "https://api.anthropic.com/v1/models", Header: "x-api-key",
			Extra: map[string]string{"anthropic-version": "2023-06-01"}},
		"openai":  {URL: "https://api.openai.com/v1/models", Header: "Authorization", Prefix: "Bearer "},
		"discord": {URL: "https://discord.com/api/v10/users/@me", Header: "Authorization", Prefix: "Bot "},
	}
}

// HTTPVerifier verifies keys with a GET to the provider's endpoint: 2xx accepts, 401 and 403
// reject, anything else is an error (retry later).
type HTTPVerifier struct {
	// Endpoints by provider. Default DefaultEndpoints().
	Endpoints map[string]Endpoint
	// Client makes the requests. Default: a client with a 15 s timeout.
	Client *http.Client
}

// ErrNoVerifier means no check is configured for the key's provider: the key can be neither
// verified nor, therefore, activated until one is.
var ErrNoVerifier = errors.New("keystore: no verifier for this provider")

// Verify implements Verifier.
func (v *HTTPVerifier) Verify(ctx context.Context, provider string, _ Kind, secret Secret) error {
	eps := v.Endpoints
	if eps == nil {
		eps = DefaultEndpoints()
	}
	ep, ok := eps[provider]
	if !ok {
		return fmt.Errorf("%w %q", ErrNoVerifier, provider)
	}
	if strings.ContainsAny(string(secret), "\r\n") {
		return fmt.Errorf("%w: key contains a line break", ErrKeyRejected)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.URL, nil)
	if err != nil {
		return fmt.Errorf("keystore: verify %s: bad endpoint", provider)
	}
	req.Header.Set(ep.Header, ep.Prefix+string(secret))
	for k, val := range ep.Extra {
		req.Header.Set(k, val)
	}
	c := http.Client{Timeout: 15 * time.Second}
	if v.Client != nil {
		c = *v.Client
	}
	// Never follow a redirect: net/http would carry a provider's key header (x-api-key, or
	// Authorization to a subdomain) to wherever it points. A 3xx is an unexpected answer.
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		// The URL carries no key, so the transport error is safe to wrap.
		return fmt.Errorf("keystore: verify %s: %w", provider, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%w: %s answered %d", ErrKeyRejected, provider, resp.StatusCode)
	}
	return fmt.Errorf("keystore: verify %s: provider answered %d", provider, resp.StatusCode)
}
