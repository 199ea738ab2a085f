package fly

import (
	"context"
	"errors"
	"fmt"
	"github.com/moltgate/moltgate/provisioner/retry"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/superfly/fly-go/flaps"
)

// APIError is an answer of the Machines API outside 2xx. Message is the API's error text,
// left empty for calls that carry secrets.
type APIError struct {
	Status  int
	Message string
}

// Error is "status N: message".
func (e *APIError) Error() string {
	if e.Message == "" {
		return "status " + strconv.Itoa(e.Status)
	}
	return "status " + strconv.Itoa(e.Status) + ": " + e.Message
}

// statusOf is the HTTP status behind err, or 0.
func statusOf(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// kind says which failures of a call may be retried in place.
type kind int

const (
	// read calls and idempotent writes (set secrets, delete, refresh a lease) are retried
	// on 429, 5xx and timeouts.
	idempotent kind = iota
	// create calls are retried on 429 only: after a 5xx or a timeout the resource may exist,
	// so the call fails with ErrUnknownResult for the caller to resolve by a lookup.
	create
)

// callOpts tune one call.
type callOpts struct {
	kind kind
	// timeout of one attempt; 0 means Config.RequestTimeout.
	timeout time.Duration
	// secret: the call carries secrets, so its errors keep the status only.
	secret bool
}

// call runs fn, one attempt at a time, each under its own timeout, retrying what opts.kind
// allows. It returns nil, ctx's error, or an error wrapping *APIError, ErrUnknownResult or
// ErrRateLimited.
func (d *Driver) call(ctx context.Context, opts callOpts, fn func(ctx context.Context) error) error {
	timeout := opts.timeout
	if timeout == 0 {
		timeout = d.cfg.RequestTimeout
	}
	for attempt := 1; ; attempt++ {
		n := &note{}
		actx, cancel := context.WithTimeout(context.WithValue(ctx, noteKey{}, n), timeout)
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		status, retryAfter := n.get()
		err = apiError(err, status, opts.secret)
		var delay time.Duration
		switch {
		case status == http.StatusTooManyRequests:
			// A 429 was not processed: any call may be repeated, after Retry-After.
			delay = retryAfter
			if delay > d.cfg.MaxRetryAfter || attempt >= d.cfg.Attempts {
				return fmt.Errorf("%w (retry after %s): %w", ErrRateLimited, delay, err)
			}
		case opts.kind == create && status >= 200 && status < 300:
			// Created, but the answer did not decode: what exists is for a lookup to say.
			return fmt.Errorf("%w: %w", ErrUnknownResult, err)
		case transient(err, status):
			if opts.kind == create {
				return fmt.Errorf("%w: %w", ErrUnknownResult, err)
			}
			if attempt >= d.cfg.Attempts {
				return err
			}
			delay = retry.Backoff(attempt)
		default:
			return err
		}
		if err := retry.Sleep(ctx, delay); err != nil {
			return err
		}
	}
}

// apiError turns flaps' error for an answer with status into an *APIError, dropping the
// API's message for calls with secrets. Errors without an answer are returned unchanged.
func apiError(err error, status int, secret bool) error {
	if status < 300 {
		var unknown *unknownResultError
		if errors.As(err, &unknown) && unknown.status != 0 {
			status = unknown.status
		} else {
			return err
		}
	}
	ae := &APIError{Status: status}
	var fe *flaps.FlapsError
	if !secret && errors.As(err, &fe) {
		ae.Message = fe.Error()
	}
	return ae
}

// transient reports a failure that may pass: a 5xx, no answer in time, a broken connection.
func transient(err error, status int) bool {
	if status >= 500 {
		return true
	}
	if status != 0 {
		return false
	}
	var ue *url.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ue)
}

// note records what the transport saw of a call's last answer: flaps' errors keep neither
// the headers nor, after its own retries (lease acquire), the status.
type note struct {
	mu         sync.Mutex
	status     int
	retryAfter time.Duration
}

type noteKey struct{}

func (n *note) set(resp *http.Response) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.status = resp.StatusCode
	n.retryAfter = 0
	if resp.StatusCode == http.StatusTooManyRequests {
		n.retryAfter = retry.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
}

func (n *note) get() (int, time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.status, n.retryAfter
}

// unknownResultError is a POST that may have taken effect: its answer was a 502 or 503, or
// never came. It has no Temporary method on purpose: fly.NewHTTPClient's retrying
// transport (rehttp) repeats 502, 503 and temporary errors for every method, and a
// repeated create makes a second volume or IP. (Its repeat of a request body also races
// with net/http still writing the first attempt's body: seen with -race.)
type unknownResultError struct {
	status int
	err    error
}

func (e *unknownResultError) Error() string {
	if e.err != nil {
		return "no answer to a create: " + e.err.Error()
	}
	return "status " + strconv.Itoa(e.status) + " to a create"
}

func (e *unknownResultError) Unwrap() error { return e.err }

// transport sends the client's requests to the configured base URL, records each answer
// in the call's note, and stops the SDK's retries of POSTs.
type transport struct {
	base *url.URL
	next http.RoundTripper
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.URL.Scheme, r.URL.Host, r.Host = t.base.Scheme, t.base.Host, ""
	if p := strings.TrimSuffix(t.base.Path, "/"); p != "" {
		r.URL.Path = p + req.URL.Path
		if req.URL.RawPath != "" {
			r.URL.RawPath = p + req.URL.RawPath
		}
	}
	resp, err := t.next.RoundTrip(r)
	post := req.Method == http.MethodPost
	if err != nil {
		if post {
			return nil, &unknownResultError{err: err}
		}
		return nil, err
	}
	if n, ok := req.Context().Value(noteKey{}).(*note); ok {
		n.set(resp)
	}
	if post && (resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable) {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
		return nil, &unknownResultError{status: resp.StatusCode}
	}
	return resp, nil
}
