package fakeapi_test

import (
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moltgate/moltgate/provisioner/internal/fakeapi"
)

// plain answers injected faults with their status and the kind's name.
type plain struct{}

func (plain) Internal(w http.ResponseWriter, status int) { http.Error(w, "internal", status) }
func (plain) RateLimited(w http.ResponseWriter) {
	http.Error(w, "rate-limit", http.StatusTooManyRequests)
}
func (plain) Fault(_ fakeapi.Route, f fakeapi.Fault, w http.ResponseWriter, _ *http.Request) {
	http.Error(w, f.Kind.String(), fakeapi.OrDefault(f.Status, http.StatusConflict))
}

const route fakeapi.Route = "POST /things"

// TestFaultQueue: faults on a route apply in the order injected, each for its Times (a
// negative Times until ClearFaults); a fault after the work lets the work happen; every call
// is counted, faulted or not; Retry-After is whole seconds, rounded up.
func TestFaultQueue(t *testing.T) {
	api := fakeapi.New(plain{}, nil)
	var made atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc(string(route), api.Wrap(route, func(http.ResponseWriter, *http.Request) bool { return true },
		func(w http.ResponseWriter, _ *http.Request) { made.Add(1); w.WriteHeader(http.StatusCreated) }))
	url := api.Serve(mux)
	t.Cleanup(api.Close)
	post := func() (int, string) {
		t.Helper()
		resp, err := http.Post(url+"/things", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}

	api.Inject(route, fakeapi.Fault{Kind: fakeapi.Fail, Times: 2})
	api.Inject(route, fakeapi.Fault{Kind: fakeapi.RateLimit, RetryAfter: 1500 * time.Millisecond})
	api.Inject(route, fakeapi.Fault{Kind: fakeapi.FailAfter, Status: http.StatusBadGateway})
	api.Inject(route, fakeapi.Fault{Kind: fakeapi.OwnKind})
	want := []struct {
		status int
		retry  string
		made   int64
	}{{500, "", 0}, {500, "", 0}, {429, "2", 0}, {502, "", 1}, {409, "", 1}, {201, "", 2}}
	for i, w := range want {
		status, retry := post()
		if status != w.status || retry != w.retry || made.Load() != w.made {
			t.Errorf("call %d: got %d Retry-After %q, %d made; want %d %q, %d made", i, status, retry, made.Load(), w.status, w.retry, w.made)
		}
	}
	api.Inject(route, fakeapi.Fault{Kind: fakeapi.Fail, Times: -1})
	for i := range 3 {
		if status, _ := post(); status != 500 {
			t.Errorf("call %d under a fault for every request: got %d, want 500", i, status)
		}
	}
	api.ClearFaults()
	if status, _ := post(); status != http.StatusCreated {
		t.Errorf("after ClearFaults: got %d, want 201", status)
	}
	if got, want := api.Calls(route), len(want)+4; got != want {
		t.Errorf("calls: got %d, want %d", got, want)
	}
	if got := fakeapi.OwnKind.String(); got != "fault("+strconv.Itoa(int(fakeapi.OwnKind))+")" {
		t.Errorf("a fake's own kind: got %q", got)
	}
}
