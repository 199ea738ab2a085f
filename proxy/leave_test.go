package proxy_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/proxy"
	"github.com/moltgate/moltgate/registry"
)

// leavingDecider is the real engine, entered only once the caller's context has ended: the
// client's disconnect during its decision happens every time, not by chance.
type leavingDecider struct {
	*policies.Engine
	entered chan struct{}
}

func (d leavingDecider) Decide(ctx context.Context, in *policies.Input) (policies.Decision, error) {
	close(d.entered)
	<-ctx.Done()
	return d.Engine.Decide(ctx, in)
}

// Issue 16: a client that disconnects while its request is being decided is not a policy
// failure. Load tests end this way hundreds of times, and each was an ERROR log, a count in
// moltgate_policy_errors_total (which fires the policy-error alert) and a policy.deny event
// with policy_error/503. It is counted as a cancelled request (499, decision canceled), and
// the engine counts a cancelled decision; nothing else.
func TestClientLeavingDuringDecisionIsNotAPolicyError(t *testing.T) {
	f := newFixture(t, registry.AuthToken)
	var logs testenv.LogBuffer
	reg := prometheus.NewRegistry()
	dec := leavingDecider{Engine: f.engine, entered: make(chan struct{})}
	h, err := proxy.New(proxy.Config{}, proxy.Deps{Gateways: f.reg, Policy: dec, Audit: f.audit,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(served)
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	_, eventsBefore := f.lastEvent(t)
	errorsBefore := testutil.ToFloat64(mustCounter(t, f.metrics, "moltgate_policy_errors_total"))

	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/health", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "gwa.gw.localhost"
	req.Header.Set("Authorization", "Bearer "+tokA)
	done := make(chan error, 1)
	go func() {
		resp, err := srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	<-dec.entered
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("client: got %v, want its own cancellation", err)
	}
	<-served

	if got := testutil.ToFloat64(mustCounter(t, f.metrics, "moltgate_policy_errors_total")); got != errorsBefore {
		t.Errorf("moltgate_policy_errors_total: got %v, want %v", got, errorsBefore)
	}
	if got := testutil.ToFloat64(mustCounter(t, f.metrics, "moltgate_policy_decisions_total", "canceled")); got != 1 {
		t.Errorf(`moltgate_policy_decisions_total{decision="canceled"}: got %v, want 1`, got)
	}
	if got := testutil.ToFloat64(mustCounter(t, reg, "moltgate_http_requests_total", "4xx", "canceled", "gateway")); got != 1 {
		t.Errorf(`moltgate_http_requests_total{route="gateway",decision="canceled",code="4xx"}: got %v, want 1`, got)
	}
	if ev, n := f.lastEvent(t); n != eventsBefore {
		t.Errorf("audit: got %d new events, last %+v; want none", n-eventsBefore, ev)
	}
	if s := logs.String(); s != "" {
		t.Errorf("log: got %s, want nothing", s)
	}
	if f.up.count() != 0 {
		t.Error("the gateway received the request")
	}
}
