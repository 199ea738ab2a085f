package local

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/moltgate/moltgate/provisioner"
)

type (
	dirStep     struct{ d *Driver }
	processStep struct{ d *Driver }
	readyStep   struct{ d *Driver }
)

func (dirStep) Name() string     { return "local.dir" }
func (processStep) Name() string { return "local.process" }
func (readyStep) Name() string   { return "local.ready" }

var subdirs = []string{"home", "tmp", "state"}

// Check: the gateway's folder is there.
func (s dirStep) Check(_ context.Context, r *provisioner.Run) (bool, error) {
	for _, sub := range subdirs {
		if fi, err := os.Stat(filepath.Join(s.d.dir(r.Spec.ID), sub)); err != nil || !fi.IsDir() {
			return false, nil
		}
	}
	return true, nil
}

// Ensure makes the gateway's folder: HOME, TMPDIR and the OpenClaw state directory, mode 0700.
func (s dirStep) Ensure(_ context.Context, r *provisioner.Run) error {
	dir := s.d.dir(r.Spec.ID)
	for _, sub := range subdirs {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return err
		}
	}
	r.SetOutput("local.dir", dir)
	return nil
}

// Destroy removes the folder, once nothing runs in it.
func (s dirStep) Destroy(ctx context.Context, r *provisioner.Run) error {
	if err := s.d.stopAll(ctx, r.Spec.ID); err != nil {
		return err
	}
	return os.RemoveAll(s.d.dir(r.Spec.ID))
}

// Check: the gateway's process runs, with the tenant's current keys, and its config holds
// the current token.
func (s processStep) Check(_ context.Context, r *provisioner.Run) (bool, error) {
	p := s.d.find(r.Spec.ID)
	if p == nil {
		return false, nil
	}
	ri, ok := s.d.readRun(r.Spec.ID)
	if !ok || ri.PID != p.pid {
		return false, nil
	}
	keys, err := keysFingerprint(r)
	if err != nil {
		return false, err
	}
	return ri.Keys == keys && equalToken(s.d.configToken(r.Spec.ID), string(r.Token())) &&
		r.Upstream() == upstream(ri.Port), nil
}

// Ensure runs the gateway: adopts the process working in its folder, if any, and otherwise
// starts one on a free loopback port (its previous port when free) with the token in its
// config and the tenant's active provider keys in its environment. A process that holds
// other keys is restarted (keys are read at start); one whose config holds another token
// gets the new config, which OpenClaw applies without a restart, and Ensure waits until the
// gateway accepts the new token.
func (s processStep) Ensure(ctx context.Context, r *provisioner.Run) error {
	id, tok := r.Spec.ID, string(r.Token())
	if tok == "" {
		return errors.New("no token")
	}
	keys, err := keysFingerprint(r)
	if err != nil {
		return err
	}
	ri, _ := s.d.readRun(id)
	p := s.d.find(id)
	if p != nil && ri.PID == 0 && ri.Port != 0 {
		// Started by a pass that died before recording its pid: run.json is written before
		// a start, so this process runs with the port and keys it names.
		ri.PID = p.pid
		if err := s.d.writeRun(id, ri); err != nil {
			return err
		}
	}
	if p != nil && (ri.PID != p.pid || ri.Keys != keys || ri.Port == 0) {
		r.Logger.Info("local: restarting the gateway process: its keys changed or its run record is stale", "pid", p.pid)
		if err := s.d.stop(ctx, p); err != nil {
			return err
		}
		p = nil
	}
	if p != nil {
		if !equalToken(s.d.configToken(id), tok) {
			if err := s.d.writeConfig(id, ri.Port, tok); err != nil {
				return err
			}
			if err := s.d.waitToken(ctx, p, ri.Port, tok); err != nil {
				return err
			}
		}
		r.SetOutput("local.port", strconv.Itoa(ri.Port))
		r.SetUpstream(upstream(ri.Port))
		return nil
	}
	if err := Installed(s.d.cfg.OpenClaw); err != nil {
		return err
	}
	if err := s.d.killStrays(id); err != nil {
		return err
	}
	want := ri.Port
	if n, err := strconv.Atoi(r.Output("local.port")); err == nil && want == 0 {
		want = n
	}
	port, err := freePort(want)
	if err != nil {
		return err
	}
	if err := s.d.writeConfig(id, port, tok); err != nil {
		return err
	}
	opened, err := r.OpenKeys(ctx)
	if err != nil {
		return fmt.Errorf("open provider keys: %w", err)
	}
	// Recorded before the start, so a pass that dies right after it finds the process
	// and knows what it runs with.
	ri = runInfo{Port: port, Keys: keys, Started: time.Now().UTC()}
	if err := s.d.writeRun(id, ri); err != nil {
		return err
	}
	p, err = s.d.start(id, port, s.d.env(id, opened))
	if err != nil {
		return err
	}
	ri.PID = p.pid
	if err := s.d.writeRun(id, ri); err != nil {
		return err
	}
	r.Logger.Info("local: gateway process started", "pid", p.pid, "port", port, "keys", len(opened))
	r.SetOutput("local.port", strconv.Itoa(port))
	r.SetUpstream(upstream(port))
	return nil
}

// Destroy stops the gateway's process (and anything else working in its folder).
func (s processStep) Destroy(ctx context.Context, r *provisioner.Run) error {
	if err := s.d.stopAll(ctx, r.Spec.ID); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(s.d.dir(r.Spec.ID), "run.json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Check: the gateway answers /readyz and /startupz (its startup sidecars settled: a
// WebSocket connect would not be told to come back later).
func (s readyStep) Check(ctx context.Context, r *provisioner.Run) (bool, error) {
	ok := ready(ctx, r.Upstream())
	if p := s.d.find(r.Spec.ID); ok && p != nil {
		p.ready.Store(true)
	}
	return ok, nil
}

// Ensure waits, up to StartTimeout, until the gateway is ready; a process that exits
// meanwhile fails the step (its log is gateway.log in the gateway's folder).
func (s readyStep) Ensure(ctx context.Context, r *provisioner.Run) error {
	p := s.d.find(r.Spec.ID)
	if p == nil {
		return errors.New("no gateway process")
	}
	ctx, cancel := context.WithTimeout(ctx, s.d.cfg.StartTimeout)
	defer cancel()
	for !ready(ctx, r.Upstream()) {
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-p.done:
			t.Stop()
			return fmt.Errorf("gateway process exited while starting (see %s)", filepath.Join(s.d.dir(r.Spec.ID), "gateway.log"))
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("gateway not ready after %s: %w", s.d.cfg.StartTimeout, ctx.Err())
		case <-t.C:
		}
	}
	p.ready.Store(true)
	return nil
}

// Destroy: nothing to remove.
func (readyStep) Destroy(context.Context, *provisioner.Run) error { return nil }

var probeClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}

func ready(ctx context.Context, base string) bool {
	if base == "" {
		return false
	}
	for _, path := range []string{"/readyz", "/startupz"} {
		if get(ctx, base+path, "") != http.StatusOK {
			return false
		}
	}
	return true
}

func get(ctx context.Context, url, token string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitToken waits until the gateway on port accepts tok (it applies a changed token by
// itself, about a quarter second after the file changed).
func (d *Driver) waitToken(ctx context.Context, p *proc, port int, tok string) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.StartTimeout)
	defer cancel()
	url := upstream(port) + "/control-ui-config.json"
	for get(ctx, url, tok) != http.StatusOK {
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-p.done:
			t.Stop()
			return errors.New("gateway process exited while taking its new token")
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("gateway did not take its new token: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// keysFingerprint names the tenant's active provider keys (id and fingerprint, never the
// secret): a process started with other keys must be restarted.
func keysFingerprint(r *provisioner.Run) (string, error) {
	fp, err := r.KeysFingerprint()
	if err != nil {
		return "", fmt.Errorf("active keys: %w", err)
	}
	return fp, nil
}

func upstream(port int) string {
	if port == 0 {
		return ""
	}
	return "http://127.0.0.1:" + strconv.Itoa(port)
}

// configToken is the token in gateway id's openclaw.json, or "".
func (d *Driver) configToken(id string) string {
	b, err := os.ReadFile(filepath.Join(d.dir(id), "openclaw.json"))
	if err != nil {
		return ""
	}
	var c struct {
		Gateway struct {
			Auth struct {
				Token string `json:"token"`
			} `json:"auth"`
		} `json:"gateway"`
	}
	if json.Unmarshal(b, &c) != nil {
		return ""
	}
	return c.Gateway.Auth.Token
}

func equalToken(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
