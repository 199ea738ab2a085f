package cloudflare

import (
	"context"
	"errors"
	"fmt"
	"github.com/moltgate/moltgate/provisioner/retry"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cloudflare/cloudflare-go/v7/option"
	"github.com/cloudflare/cloudflare-go/v7/packages/pagination"
	"github.com/cloudflare/cloudflare-go/v7/zero_trust"
)

// APIError is an answer of the API outside 2xx: its status and error codes. It never
// carries the API's messages or the SDK's error text, which hold the request URL and the
// raw answer.
type APIError struct {
	Status int
	Codes  []int64
}

// Error is "status N (codes a, b)".
func (e *APIError) Error() string {
	s := "status " + strconv.Itoa(e.Status)
	if len(e.Codes) > 0 {
		c := make([]string, len(e.Codes))
		for i, code := range e.Codes {
			c[i] = strconv.FormatInt(code, 10)
		}
		s += " (codes " + strings.Join(c, ", ") + ")"
	}
	return s
}

// Has reports whether the answer carried code.
func (e *APIError) Has(code int64) bool { return slices.Contains(e.Codes, code) }

// hasCode reports whether err is an answer carrying code.
func hasCode(err error, code int64) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Has(code)
}

// statusOf is the HTTP status behind err, or 0.
func statusOf(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// transportError is a call that got no readable answer: no connection, no answer in time,
// or an answer that did not decode. Its text is the driver's own.
type transportError struct{ what string }

func (e *transportError) Error() string { return e.what }

// errLimiter marks a call the client-side limiter refused to wait for (the deadline comes
// first): nothing was sent.
var errLimiter = errors.New("cloudflare: client-side rate limit: no slot before the deadline")

// kind says which failures of a call may be retried in place.
type kind int

const (
	// idempotent calls (reads, overwrites, deletes) are retried on 429, 5xx and timeouts.
	idempotent kind = iota
	// create calls are retried on 429 only: after a 5xx or a timeout the resource may
	// exist, so the call fails with ErrUnknownResult for the caller to resolve by a lookup.
	create
)

// call runs fn, one attempt at a time, each under RequestTimeout, retrying what k allows.
// It returns nil, ctx's error, or an error wrapping *APIError, ErrUnknownResult,
// ErrRateLimited or ErrUnauthorized, never the SDK's own error.
func (d *Driver) call(ctx context.Context, k kind, fn func(ctx context.Context) error) error {
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		err, retryAfter := clean(err)
		var delay time.Duration
		switch status := statusOf(err); {
		case errors.Is(err, errLimiter):
			return err
		case status == http.StatusTooManyRequests:
			// A 429 was not processed: any call may be repeated, after Retry-After.
			delay = retryAfter
			if delay > d.cfg.MaxRetryAfter || attempt >= d.cfg.Attempts {
				return fmt.Errorf("%w (retry after %s): %w", ErrRateLimited, delay, err)
			}
		case status == http.StatusUnauthorized || status == http.StatusForbidden || hasCode(err, codeAuth):
			return fmt.Errorf("%w: %w", ErrUnauthorized, err)
		case status >= 500 || status == 0:
			if k == create {
				return fmt.Errorf("%w: %w", ErrUnknownResult, err)
			}
			if attempt >= d.cfg.Attempts {
				return err
			}
			delay = retry.Backoff(attempt)
		default:
			return err
		}
		d.log.LogAttrs(ctx, slog.LevelDebug, "cloudflare: retrying", slog.Int("attempt", attempt),
			slog.Int("status", statusOf(err)), slog.Duration("delay", delay))
		if err := retry.Sleep(ctx, delay); err != nil {
			return err
		}
	}
}

// clean turns the SDK's error into the driver's: an *APIError with status and codes, or a
// *transportError. For a 429 it also returns the Retry-After (1 s when missing).
func clean(err error) (error, time.Duration) {
	if errors.Is(err, errLimiter) {
		return errLimiter, 0
	}
	var ae *zero_trust.Error // an alias of the SDK's apierror.Error, as dns.Error is
	if errors.As(err, &ae) {
		out := &APIError{Status: ae.StatusCode}
		for _, e := range ae.Errors {
			out.Codes = append(out.Codes, e.Code)
		}
		var after time.Duration
		if ae.StatusCode == http.StatusTooManyRequests && ae.Response != nil {
			after = retry.ParseRetryAfter(ae.Response.Header.Get("Retry-After"), time.Now())
		}
		return out, after
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return &transportError{"no answer within request_timeout"}, 0
	case errors.As(err, &ne):
		return &transportError{"connection failed"}, 0
	}
	return &transportError{"unreadable answer"}, 0
}

// limit is the SDK middleware that spends one slot of the client-side budget per request.
func (d *Driver) limit(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
	if err := d.limiter.Wait(req.Context()); err != nil {
		if req.Context().Err() != nil {
			return nil, req.Context().Err()
		}
		return nil, errLimiter
	}
	return next(req)
}

// maxPages bounds a listing: at the default page size, 50,000 items.
const maxPages = 1000

// listAll pages through a list call, each page a call of its own (retried as idempotent),
// until a short or empty page. It pages by hand: the SDK's auto-pager fetches the next
// pages under context.Background(), out of reach of ctx and the request timeout.
func listAll[T any](ctx context.Context, d *Driver, page func(ctx context.Context, n, size int64) (*pagination.V4PagePaginationArray[T], error)) ([]T, error) {
	var all []T
	size := int64(d.cfg.PageSize)
	for n := int64(1); n <= maxPages; n++ {
		var res *pagination.V4PagePaginationArray[T]
		err := d.call(ctx, idempotent, func(ctx context.Context) (err error) {
			res, err = page(ctx, n, size)
			return err
		})
		if err != nil {
			return nil, err
		}
		all = append(all, res.Result...)
		// The API may cap per_page below what was asked: a page is short against the
		// per_page it reports.
		per := size
		if res.ResultInfo.PerPage > 0 {
			per = min(per, res.ResultInfo.PerPage)
		}
		if len(res.Result) == 0 || int64(len(res.Result)) < per {
			return all, nil
		}
	}
	return nil, fmt.Errorf("cloudflare: listing: more than %d pages", maxPages)
}
