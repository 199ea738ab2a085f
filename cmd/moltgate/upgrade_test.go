package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moltgate/moltgate/provisioner"
	"github.com/moltgate/moltgate/proxy/admin"
)

// tokenEnv is an environment with an admin token, and nothing else.
func tokenEnv(k string) string {
	if k == "MOLTGATE_ADMIN_TOKEN" {
		return strings.Repeat("t", 40)
	}
	return ""
}

// Issue 14: mistakes on the upgrade command line are usage errors (exit 2), found before any
// request is made (the admin URL is a closed port): an image not pinned by digest above all.
func TestUpgradeCommandLine(t *testing.T) {
	const (
		closed = "--admin-url=http://127.0.0.1:1"
		pinned = "--image=registry.example.test/gw@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"gateway", "upgrade", "gw1"}, "--image required"},
		{[]string{"gateway", "upgrade", "gw1", "--image=registry.example.test/gw:latest"}, "not pinned by digest"},
		{[]string{"gateway", "upgrade", "gw1", "--image=registry.example.test/gw@sha256:abc"}, "not pinned by digest"},
		{[]string{"gateway", "upgrade", pinned}, "usage: moltgate gateway upgrade ID"},
		{[]string{"gateway", "upgrade", "gw1", "--all", pinned}, "usage: moltgate gateway upgrade ID"},
		{[]string{"gateway", "upgrade", "gw1", "gw2", pinned}, "usage: moltgate gateway upgrade ID"},
		{[]string{"gateway", "upgrade", "--all", "--canary=-1", pinned}, "usage: moltgate gateway upgrade ID"},
		{[]string{"gateway", "upgrade", "--all", "--batch=0", pinned}, "usage: moltgate gateway upgrade ID"},
	} {
		err := run(t.Context(), append(tt.args, closed), tokenEnv, io.Discard, io.Discard)
		var u usageError
		if !errors.As(err, &u) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: got %v, want a usage error with %q", tt.args, err, tt.want)
		}
	}
	// Well formed, it reaches for the admin API.
	err := run(t.Context(), []string{"gateway", "upgrade", "--all", pinned, closed}, tokenEnv, io.Discard, io.Discard)
	var u usageError
	if err == nil || errors.As(err, &u) {
		t.Errorf("a well formed fleet upgrade: got %v, want the admin API's error", err)
	}
}

// Issue 14: a fleet upgrade prints each gateway's change as the server reports it (state and
// digest), then the outcome. The admin API here is an httptest server that answers as
// moltgate's does: the fleet view changes twice while the upgrade request is held.
func TestUpgradeCommandShowsProgress(t *testing.T) {
	const (
		old = "registry.example.test/gw@sha256:" + "1111111111111111111111111111111111111111111111111111111111111111"
		img = "registry.example.test/gw@sha256:" + "2222222222222222222222222222222222222222222222222222222222222222"
	)
	views := []admin.FleetView{
		{Gateways: []admin.GatewayImage{{ID: "gw-1", Driver: "fly", Image: old, Digest: provisioner.Digest(old)}}},
		{Gateways: []admin.GatewayImage{{ID: "gw-1", Driver: "fly", Upgrade: &provisioner.UpgradeStatus{Image: img, Previous: old, State: provisioner.UpgradeRunning}}}},
		{Gateways: []admin.GatewayImage{{ID: "gw-1", Driver: "fly", Image: img, Digest: provisioner.Digest(img),
			Upgrade: &provisioner.UpgradeStatus{Image: img, Previous: old, State: provisioner.UpgradeDone}}}},
	}
	var (
		mu     sync.Mutex
		served int
		seen   = make(chan struct{}) // closed once every view was served
	)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/upgrades", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		v := views[min(served, len(views)-1)]
		if served++; served == len(views) {
			close(seen)
		}
		mu.Unlock()
		json.NewEncoder(w).Encode(v)
	})
	mux.HandleFunc("POST /v1/upgrades", func(w http.ResponseWriter, r *http.Request) {
		var fs provisioner.FleetSpec
		if err := json.NewDecoder(r.Body).Decode(&fs); err != nil || fs != (provisioner.FleetSpec{Image: img, Canary: 1, Batch: 3}) {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		<-seen
		json.NewEncoder(w).Encode(provisioner.Fleet{Spec: fs, State: provisioner.FleetDone, Batches: [][]string{{"gw-1"}}})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	var stdout, stderr strings.Builder
	err := run(t.Context(), []string{"gateway", "upgrade", "--all", "--image", img, "--canary", "1", "--batch", "3", "--admin-url", srv.URL},
		tokenEnv, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	for _, want := range []string{"gw-1             upgrading", "gw-1             upgraded     " + provisioner.Digest(img)} {
		if strings.Count(stderr.String(), want) != 1 {
			t.Errorf("progress: want %q once in:\n%s", want, stderr.String())
		}
	}
	if want := "fleet upgraded to " + img + ": 1 gateways in 1 batches\n"; stdout.String() != want {
		t.Errorf("stdout: got %q, want %q", stdout.String(), want)
	}
}

// Issue 14: gateway show and gateway status show a provisioned gateway's image, the digest
// it runs and its last upgrade; show of a gateway whose provisioning the caller may not read
// shows the registry's record alone.
func TestShowPrintsTheImage(t *testing.T) {
	const (
		old = "registry.example.test/gw@sha256:" + "1111111111111111111111111111111111111111111111111111111111111111"
		img = "registry.example.test/gw@sha256:" + "2222222222222222222222222222222222222222222222222222222222222222"
	)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/gateways/{id}", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(admin.Gateway{ID: r.PathValue("id"), Tenant: "acme", Owner: "user_alice", AuthMode: "token"})
	})
	mux.HandleFunc("GET /v1/gateways/{id}/provision", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != "gw-1" {
			w.WriteHeader(http.StatusForbidden)
			json.NewEncoder(w).Encode(map[string]string{"error": "platform admins only", "reason": "platform_admin_only"})
			return
		}
		json.NewEncoder(w).Encode(admin.Provision{Status: provisioner.Status{
			Spec: provisioner.Spec{ID: "gw-1", Tenant: "acme", Owner: "user_alice", Driver: "fly", Image: img}, Image: img,
			Upgrade: &provisioner.UpgradeStatus{Image: img, Previous: old, State: provisioner.UpgradeDone},
			Drift: []provisioner.Drift{{Step: "cloudflare.dns", Kind: "dns", Detail: "gw-1.gw.example.test points at tunnel t2, want t1",
				Found: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)}}}})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	wantLines := []string{"image\t" + img, "digest\t" + provisioner.Digest(img) + " (running)",
		"upgrade\tupgraded to " + provisioner.Digest(img) + ", from " + provisioner.Digest(old),
		"drift\tcloudflare.dns dns: gw-1.gw.example.test points at tunnel t2, want t1 (found 2026-12-07T12:00:00Z, not repaired)"}
	for _, verb := range []string{"show", "status"} {
		var stdout strings.Builder
		if err := run(t.Context(), []string{"gateway", verb, "gw-1", "--admin-url", srv.URL}, tokenEnv, &stdout, io.Discard); err != nil {
			t.Fatalf("%s: %v", verb, err)
		}
		for _, want := range wantLines {
			if !strings.Contains(stdout.String(), want+"\n") {
				t.Errorf("gateway %s: want %q in:\n%s", verb, want, stdout.String())
			}
		}
	}
	var stdout strings.Builder
	if err := run(t.Context(), []string{"gateway", "show", "gw-2", "--admin-url", srv.URL}, tokenEnv, &stdout, io.Discard); err != nil ||
		!strings.Contains(stdout.String(), "gw-2") || strings.Contains(stdout.String(), "digest") {
		t.Errorf("show of a gateway whose provisioning is not readable: %v\n%s", err, stdout.String())
	}
}
