package main_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy/admin"
)

// Issue 5: moltgate serve killed with SIGKILL mid-burst and restarted: the archive holds
// every event acknowledged to a caller exactly once, `audit verify` passes over files,
// stream and archive, and tampering with one archived event makes it fail naming that event.
func TestAuditSurvivesSIGKILL(t *testing.T) {
	rs := testenv.Redis(t)
	data := filepath.Join(t.TempDir(), "data")
	archive := filepath.Join(data, "audit-archive")
	config := fmt.Sprintf(`
listen: @LISTEN@
admin_listen: @ADMIN@
data_dir: %s
admin_token: {file: @ADMINTOKEN@}
# Thousands of refused calls from one address are these tests' event source, not an attack.
proxy: {auth_failures: {limit: -1}}
audit:
  replica: e2e
  sync_interval: 20ms
  checkpoint_every: 100
  redis: {addr: %s}
  archive: {interval: 100ms}
`, data, rs.Addr)
	mg := startMoltgate(t, config)

	// Callers with a wrong token: each refusal is an authn.failure event naming the path,
	// acknowledged to the caller by the 401.
	var rb refusedBurst
	acked := &rb.acked
	done := make(chan struct{})
	go func() { rb.run(mg.adminURL, 16); close(done) }()
	waitUntil(t, "a few thousand acknowledged events", func() bool { return rb.count() > 3000 })
	if err := mg.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-done
	count := 0
	acked.Range(func(any, any) bool { count++; return true })
	t.Logf("%d events acknowledged before SIGKILL", count)

	mg2 := startMoltgate(t, config)
	mg2.cli(t, "gateway", "list") // an admin action after the restart
	waitUntil(t, "every acknowledged event archived", func() bool {
		got := archivedPaths(t, archive)
		missing := 0
		acked.Range(func(k, _ any) bool {
			if got[k.(string)] == 0 {
				missing++
			}
			return true
		})
		return missing == 0
	})
	for path, c := range archivedPaths(t, archive) {
		if c > 1 {
			t.Fatalf("%s archived %d times", path, c)
		}
	}

	pub := filepath.Join(data, "audit-checkpoint.pub")
	for _, args := range [][]string{
		{"audit", "verify", "--archive", archive, "--pubkey", pub},
		{"audit", "verify", "--files", filepath.Join(data, "audit"), "--pubkey", pub},
		{"audit", "verify", "--redis", rs.Addr, "--stream", audit.StreamKey("e2e"), "--pubkey", pub},
		{"audit", "verify", "--config", mg2.configPath, "--stream", audit.StreamKey("e2e"), "--pubkey", pub},
	} {
		out, err := exec.Command(binary, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "ok") {
			t.Fatalf("moltgate %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	// Tamper with one archived event: verify names it.
	segs, _ := filepath.Glob(filepath.Join(archive, "e2e", "*.jsonl.gz"))
	if len(segs) == 0 {
		t.Fatal("no archive segments")
	}
	seg := segs[0]
	raw, _ := os.ReadFile(seg)
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	lines := bytes.Split(plain, []byte("\n"))
	lines[2] = bytes.Replace(lines[2], []byte(`"deny"`), []byte(`"success"`), 1)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(bytes.Join(lines, []byte("\n")))
	zw.Close()
	os.WriteFile(seg, buf.Bytes(), 0o600)
	out, err := exec.Command(binary, "audit", "verify", "--archive", archive).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "seq 3") || !strings.Contains(string(out), "edited") {
		t.Fatalf("tampered archive: %v\n%s\nwant a failure naming seq 3", err, out)
	}
}

// archivedPaths counts archived authn.failure events by the path they name.
func archivedPaths(t *testing.T, dir string) map[string]int {
	t.Helper()
	got := map[string]int{}
	err := audit.Reader{ArchiveDir: dir}.Query(audit.Query{Type: audit.TypeAuthnFailure}, func(e audit.Event) bool {
		got[e.Details["path"]]++
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.WaitUntil(t, what, 60*time.Second, cond)
}

// Issue 5: with its sink down, moltgate fills the spool to its bound, then refuses requests
// (503 audit_unavailable on both listeners, /readyz 503 "spool full", the metrics say so)
// rather than run unaudited; once Redis is back the spool drains and requests are served
// again. Every refusal answered 401 before that is archived exactly once, and the chain
// verifies.
func TestAuditSpoolFullFailsClosed(t *testing.T) {
	rs := testenv.Redis(t)
	data := filepath.Join(t.TempDir(), "data")
	archive := filepath.Join(data, "audit-archive")
	mg := startMoltgate(t, fmt.Sprintf(`
listen: @LISTEN@
admin_listen: @ADMIN@
data_dir: %s
admin_token: {file: @ADMINTOKEN@}
# Thousands of refused calls from one address are these tests' event source, not an attack.
proxy: {auth_failures: {limit: -1}}
audit:
  replica: full
  sync_interval: 20ms
  spool_max_bytes: 1048576
  redis: {addr: %s}
  archive: {interval: 100ms}
`, data, rs.Addr))
	rs.Kill()

	client := &http.Client{Timeout: 10 * time.Second}
	get := func(url, token string) (int, string) {
		req, _ := http.NewRequest("GET", url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// Refused callers until the spool is full: each 401 is an event acknowledged to its caller.
	var acked []string
	for i := 0; ; i++ {
		if i == 20000 {
			t.Fatalf("no 503 after %d events into a 1 MiB spool", i)
		}
		path := fmt.Sprintf("/v1/gateways/f%d", i)
		code, body := get(mg.adminURL+path, "not-the-admin-token")
		if code == http.StatusServiceUnavailable {
			if !strings.Contains(body, "audit_unavailable") {
				t.Fatalf("503 without the reason: %s", body)
			}
			break
		}
		if code != http.StatusUnauthorized {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
		acked = append(acked, path)
	}
	t.Logf("spool full after %d events", len(acked))
	if code, body := get(mg.adminURL+"/readyz", ""); code != 503 || !strings.Contains(body, "spool full") {
		t.Fatalf("/readyz with a full spool: %d %s", code, body)
	}
	if code, body := get(mg.proxyURL+"/", ""); code != 503 || !strings.Contains(body, "audit_unavailable") {
		t.Fatalf("proxy with a full spool: %d %s", code, body)
	}
	_, metrics := get(mg.adminURL+"/metrics", "")
	for _, m := range []string{"moltgate_audit_spool_full 1", "moltgate_audit_spool_alarm 1"} {
		if !strings.Contains(metrics, m) {
			t.Fatalf("metrics lack %q", m)
		}
	}
	waitUntil(t, "the redis sink's errors counted", func() bool {
		_, metrics := get(mg.adminURL+"/metrics", "")
		return strings.Contains(metrics, `moltgate_audit_sink_errors_total{sink="redis"}`)
	})
	if log, _ := os.ReadFile(mg.logPath); !strings.Contains(string(log), "audit: spool full") {
		t.Fatal("no spool-full error in the log")
	}

	rs.Restart()
	waitUntil(t, "moltgate ready again once redis is back", func() bool {
		code, _ := get(mg.adminURL+"/readyz", "")
		return code == 200
	})
	if code, _ := get(mg.adminURL+"/v1/gateways/after", "not-the-admin-token"); code != http.StatusUnauthorized {
		t.Fatalf("after recovery: %d, want 401 again", code)
	}
	waitUntil(t, "every acknowledged event archived", func() bool {
		got := archivedPaths(t, archive)
		for _, p := range acked {
			if got[p] != 1 {
				return false
			}
		}
		return true
	})
	for path, c := range archivedPaths(t, archive) {
		if c > 1 {
			t.Fatalf("%s archived %d times", path, c)
		}
	}
	for _, args := range [][]string{
		{"audit", "verify", "--archive", archive},
		{"audit", "verify", "--files", filepath.Join(data, "audit")},
	} {
		if out, err := exec.Command(binary, args...).CombinedOutput(); err != nil {
			t.Fatalf("moltgate %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// Issue 5: every event type the README lists that a running moltgate writes is produced by a
// real action through the built binary, and read back through GET /v1/audit. (audit.
// retention.delete, which needs a year to pass, is TestRetentionDeletesOnlyExpiredAndAuditsIt
// in the audit package; secret.open is the keystore's, in proxy/admin's key tests.)
func TestAuditEventTypesFromRealActions(t *testing.T) {
	mg := startMoltgate(t, `
listen: @LISTEN@
admin_listen: @ADMIN@
data_dir: @DATA@
admin_token: {file: @ADMINTOKEN@}
audit:
  replica: types
  sync_interval: 20ms
  checkpoint_every: 3
  archive: {interval: 50ms}
`)
	ctx := t.Context()
	ops := mg.admin()
	gw := admin.CreateRequest{ID: "gwe", Tenant: "tenant-e", Owner: "user_e", Upstream: "http://127.0.0.1:1"}
	if _, err := ops.Create(ctx, gw); err != nil { // admin.change
		t.Fatal(err)
	}
	if _, err := ops.Create(ctx, gw); err == nil { // admin.deny: it exists
		t.Fatal("second create of gwe succeeded")
	}
	client := &http.Client{Timeout: 10 * time.Second}
	proxyGet := func(host, path, auth string, want int) {
		req, _ := http.NewRequest("GET", mg.proxyURL+path, nil)
		req.Host = host
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("proxy GET %s%s with %q: %d, want %d", host, path, auth, resp.StatusCode, want)
		}
	}
	proxyGet("gwe.gw.localhost", "/", "", http.StatusUnauthorized)                         // policy.deny: anonymous
	proxyGet("gwe.gw.localhost", "/a%2fb", "", http.StatusBadRequest)                      // policy.deny: bad_path, before identity
	proxyGet("nope.gw.localhost", "/", "", http.StatusNotFound)                            // proxy.probe: no such gateway
	proxyGet("gwe.gw.localhost", "/", "Bearer not-a-valid-token", http.StatusUnauthorized) // authn.failure
	if _, err := ops.Audit(ctx, admin.AuditQuery{Tenant: "tenant-e"}); err != nil {        // audit.read
		t.Fatal(err)
	}
	// admin.probe: calls no route takes, answered by the admin API, never redirected.
	noRedirect := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, c := range []struct {
		method, path string
		want         int
	}{{"OPTIONS", "/v1/gateways", 405}, {"GET", "/v1/../metrics", 400}, {"GET", "/v1", 404}} {
		req, _ := http.NewRequest(c.method, mg.adminURL+c.path, nil)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want || !strings.Contains(string(body), `"reason"`) {
			t.Fatalf("%s %s: %d %s, want %d from the admin API", c.method, c.path, resp.StatusCode, body, c.want)
		}
	}

	want := []string{audit.TypeAdminRequest, audit.TypeAdminChange, audit.TypeAdminDeny, audit.TypeAdminProbe, audit.TypeProxyProbe, audit.TypePolicyDeny,
		audit.TypeAuthnFailure, audit.TypeAuditRead, audit.TypeCheckpoint}
	var page admin.AuditPage
	waitUntil(t, "every event type readable through GET /v1/audit", func() bool {
		var err error
		if page, err = ops.Audit(ctx, admin.AuditQuery{Limit: 1000}); err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, e := range page.Events {
			got[e.Type] = true
		}
		for _, typ := range want {
			if !got[typ] {
				return false
			}
		}
		return true
	})
	for _, e := range page.Events {
		// Issue 16: every event a real action writes fits the schema the README gives.
		if err := audit.CheckSchema(e); err != nil {
			t.Errorf("event %d (%s %s): %v", e.Seq, e.Type, e.Reason, err)
		}
		if e.Type == audit.TypePolicyDeny && (e.Gateway != "gwe" || e.Tenant != "tenant-e" || e.Decision == nil || e.Decision.Path != audit.DecisionPath) {
			t.Fatalf("policy.deny without its gateway, tenant or OPA decision fields: %+v", e)
		}
		if strings.Contains(fmt.Sprint(e), mg.adminToken) || strings.Contains(fmt.Sprint(e), "not-a-valid-token") {
			t.Fatalf("a credential in an audit event: %+v", e)
		}
	}
	pub := filepath.Join(mg.dataDir, "audit-checkpoint.pub")
	for _, dir := range []string{"--files", "--archive"} {
		path := filepath.Join(mg.dataDir, map[string]string{"--files": "audit", "--archive": "audit-archive"}[dir])
		if out, err := exec.Command(binary, "audit", "verify", dir, path, "--pubkey", pub).CombinedOutput(); err != nil {
			t.Fatalf("audit verify %s: %v\n%s", dir, err, out)
		}
	}
}

// Issue 5, the fault tests through `moltgate serve`: Redis killed mid-burst, restarted empty,
// made slow (CLIENT PAUSE), then moltgate SIGKILLed mid-burst and restarted. The stream then
// holds the whole chain once, `moltgate audit archive` drains it into an archive holding every
// acknowledged event exactly once, and verify passes over spool, stream and archive; one
// edited event in the stream or the spool makes verify fail naming it.
func TestAuditFaultsThroughServe(t *testing.T) {
	rs := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	data := filepath.Join(t.TempDir(), "data")
	spool := filepath.Join(data, "audit")
	// The archive worker is off: the stream keeps every event, and the CLI archives it. The
	// replica (so the stream key) is unique to this run: Redis is restarted on its port, and
	// should another test's Redis take that port meanwhile, the two runs' streams must not
	// merge into one that holds each path twice.
	replica := fmt.Sprintf("faults-%d-%d", os.Getpid(), time.Now().UnixNano())
	config := fmt.Sprintf(`
listen: @LISTEN@
admin_listen: @ADMIN@
data_dir: %s
admin_token: {file: @ADMINTOKEN@}
# Thousands of refused calls from one address are these tests' event source, not an attack.
proxy: {auth_failures: {limit: -1}}
audit:
  replica: %s
  sync_interval: 20ms
  redis: {addr: %s}
  archive: {disabled: true}
`, data, replica, rs.Addr)
	key := audit.StreamKey(replica)
	mg := startMoltgate(t, config)

	var rb refusedBurst
	acked := &rb.acked
	client := &http.Client{Timeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { rb.run(mg.adminURL, 8); close(done) }()
	metric := func(name string) bool {
		resp, err := client.Get(mg.adminURL + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), name)
	}
	waitUntil(t, "events in the stream", func() bool { l, _ := rdb.XLen(t.Context(), key).Result(); return l > 300 })
	rs.Kill()
	waitUntil(t, "moltgate to find redis down", func() bool { return metric(`moltgate_audit_sink_errors_total{sink="redis"}`) })
	served, attempts := rb.count(), rb.n.Load()
	waitUntil(t, "requests answered 401 while redis is down", func() bool { return rb.count() > served+300 })
	rs.Restart() // empty
	waitUntil(t, "the stream refilled after the empty restart", func() bool { l, _ := rdb.XLen(t.Context(), key).Result(); return l > attempts })
	if err := rdb.Do(t.Context(), "CLIENT", "PAUSE", "700", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	served = rb.count()
	waitUntil(t, "requests answered 401 while redis is slow", func() bool { return rb.count() > served+300 })
	if err := mg.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-done

	mg2 := startMoltgate(t, config)
	// An event after the restart, so the clean stop below has a head to sign.
	req, _ := http.NewRequest("GET", mg2.adminURL+"/v1/gateways/after-restart", nil)
	req.Header.Set("Authorization", "Bearer not-the-admin-token")
	resp, err := client.Do(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("after the restart: %v %v", resp, err)
	}
	resp.Body.Close()
	acked.Store("/v1/gateways/after-restart", true)
	streamPaths := func() (map[string]int, audit.Event) {
		msgs, err := rdb.XRange(t.Context(), key, "-", "+").Result()
		if err != nil {
			return nil, audit.Event{}
		}
		got := map[string]int{}
		var last audit.Event
		for _, m := range msgs {
			if json.Unmarshal([]byte(m.Values["e"].(string)), &last) == nil {
				got[last.Details["path"]]++
			}
		}
		return got, last
	}
	var missing string // the first acknowledged path not in the stream exactly once, and why
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, _ := streamPaths()
		missing = ""
		acked.Range(func(k, _ any) bool {
			if c := got[k.(string)]; c != 1 {
				missing = fmt.Sprintf("%s is in the stream %d times (%d paths acknowledged, %d in the stream)", k, c, rb.count(), len(got))
			}
			return missing == ""
		})
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for every acknowledged event in the stream exactly once: %s", missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
	mg2.cmd.Process.Signal(syscall.SIGTERM)
	mg2.cmd.Wait()
	// A clean stop signs the head and ships that checkpoint before it exits.
	head := spoolHead(t, spool)
	if _, last := streamPaths(); last.Seq != head || last.Type != audit.TypeCheckpoint {
		t.Fatalf("stream ends at seq %d (%s), spool at %d: want the shutdown checkpoint in both", last.Seq, last.Type, head)
	}
	t.Logf("%d events acknowledged, chain of %d events", rb.count(), head)

	verify := func(args ...string) (string, error) {
		out, err := exec.Command(binary, append([]string{"audit", "verify"}, args...)...).CombinedOutput()
		return string(out), err
	}
	for _, args := range [][]string{{"--files", spool}, {"--redis", rs.Addr, "--stream", key}} {
		if out, err := verify(args...); err != nil {
			t.Fatalf("audit verify %v: %v\n%s", args, err, out)
		}
	}

	// One edited event in the stream is named; then the stream is put back.
	orig, err := rdb.XRange(t.Context(), key, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	rewrite := func(edit bool) {
		rdb.Del(t.Context(), key)
		for _, m := range orig {
			line := m.Values["e"].(string)
			if edit && m.ID == "7-0" {
				line = strings.Replace(line, `"deny"`, `"success"`, 1)
			}
			if err := rdb.XAdd(t.Context(), &redis.XAddArgs{Stream: key, ID: m.ID, Values: []any{"e", line}}).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	rewrite(true)
	if out, err := verify("--redis", rs.Addr, "--stream", key); err == nil || !strings.Contains(out, "seq 7") || !strings.Contains(out, "edited") {
		t.Fatalf("verify of a stream with seq 7 edited: %v\n%s", err, out)
	}
	rewrite(false)

	// The CLI archives the stream: every acknowledged event once, and the archive verifies.
	archive := filepath.Join(t.TempDir(), "archive")
	if out, err := exec.Command(binary, "audit", "archive", "--redis", rs.Addr, "--dir", archive).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), fmt.Sprintf("archived %d events", head)) {
		t.Fatalf("audit archive: %v\n%s", err, out)
	}
	got := archivedPaths(t, archive)
	acked.Range(func(k, _ any) bool {
		if got[k.(string)] != 1 {
			t.Fatalf("%s archived %d times, want once", k, got[k.(string)])
		}
		return true
	})
	for p, c := range got {
		if c != 1 {
			t.Fatalf("%s archived %d times", p, c)
		}
	}
	if out, err := verify("--archive", archive); err != nil {
		t.Fatalf("audit verify --archive: %v\n%s", err, out)
	}

	// One edited event in the spool is named.
	files, _ := filepath.Glob(filepath.Join(spool, "events-*.jsonl"))
	raw, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(raw, []byte("\n"))
	var ev audit.Event
	if err := json.Unmarshal(lines[9], &ev); err != nil {
		t.Fatal(err)
	}
	lines[9] = bytes.Replace(lines[9], []byte(`"deny"`), []byte(`"success"`), 1)
	if err := os.WriteFile(files[0], bytes.Join(lines, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := verify("--files", spool); err == nil || !strings.Contains(out, fmt.Sprintf("seq %d", ev.Seq)) {
		t.Fatalf("verify of a spool with seq %d edited: %v\n%s", ev.Seq, err, out)
	}
}

// spoolHead is the seq of the last event in a spool directory.
func spoolHead(t *testing.T, dir string) uint64 {
	t.Helper()
	var head uint64
	if err := (audit.Reader{SpoolDir: dir}).Query(audit.Query{}, func(e audit.Event) bool { head = e.Seq; return true }); err != nil {
		t.Fatal(err)
	}
	return head
}

// refusedBurst sends requests with a wrong token from a few callers until moltgate stops
// answering (killed). Each 401 acknowledges an authn.failure event naming the path.
type refusedBurst struct {
	acked sync.Map // paths answered 401
	n     atomic.Int64
}

// count is how many paths were acknowledged.
func (rb *refusedBurst) count() int {
	n := 0
	rb.acked.Range(func(any, any) bool { n++; return true })
	return n
}

func (rb *refusedBurst) run(base string, callers int) {
	// A fresh connection per request: net/http retries an idempotent request that failed on
	// a reused connection before any response, which would send one path twice and make
	// "each acknowledged path once" a wrong expectation.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for {
				path := fmt.Sprintf("/v1/gateways/m%d", rb.n.Add(1))
				req, _ := http.NewRequest("GET", base+path, nil)
				req.Header.Set("Authorization", "Bearer not-the-admin-token")
				resp, err := client.Do(req)
				if err != nil {
					return // killed
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusUnauthorized {
					rb.acked.Store(path, true)
				}
			}
		})
	}
	wg.Wait()
}

// The operators' CLI reaches a Redis that wants a password, read from a file (never the
// command line); without it, verify and archive fail clearly.
func TestAuditCLIRedisPassword(t *testing.T) {
	const password = "redis-pw-0123456789-abcdef"
	rs := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.ConfigSet(t.Context(), "requirepass", password).Err(); err != nil {
		t.Fatal(err)
	}
	authed := redis.NewClient(&redis.Options{Addr: rs.Addr, Password: password})
	t.Cleanup(func() { authed.Close() })
	l, err := audit.OpenFile(audit.FileConfig{Dir: t.TempDir(), Replica: "pw", Sinks: []audit.Sink{audit.NewRedisSink(authed, "pw")}},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { l.Run(ctx, 10*time.Millisecond); close(stopped) }()
	t.Cleanup(func() { cancel(); <-stopped })
	for range 5 {
		if err := l.Emit(t.Context(), audit.Event{Type: audit.TypeAdminChange, Outcome: "success"}); err != nil {
			t.Fatal(err)
		}
	}
	key := audit.StreamKey("pw")
	waitUntil(t, "5 events in the stream", func() bool { n, _ := authed.XLen(t.Context(), key).Result(); return n == 5 })

	pwFile := filepath.Join(t.TempDir(), "redis.password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "archive")
	// serve's configuration, whose audit.redis has the address and the password's file;
	// and one without audit.redis.
	withRedis, without := filepath.Join(t.TempDir(), "moltgate.yaml"), filepath.Join(t.TempDir(), "moltgate.yaml")
	for file, text := range map[string]string{
		withRedis: fmt.Sprintf("audit:\n  redis: {addr: %q, password: {file: %q}}\n", rs.Addr, pwFile),
		without:   "log: {level: info}\n",
	} {
		if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		args []string
		ok   bool
		want string
	}{
		{[]string{"verify", "--config", withRedis, "--stream", key}, true, "5 events"},
		{[]string{"tail", "--config", withRedis, "-n", "2"}, true, `"seq":5`},
		{[]string{"verify", "--config", without, "--stream", key}, false, "no audit.redis"},
		{[]string{"verify", "--config", withRedis, "--redis", rs.Addr, "--stream", key}, false, "not both"},
		{[]string{"verify", "--redis", rs.Addr, "--stream", key}, false, "NOAUTH"},
		{[]string{"verify", "--redis", rs.Addr, "--stream", key, "--redis-password-file", pwFile}, true, "5 events"},
		{[]string{"archive", "--redis", rs.Addr, "--dir", archive, "--redis-password-file", filepath.Join(t.TempDir(), "none")}, false, "--redis-password-file"},
		{[]string{"archive", "--redis", rs.Addr, "--dir", archive, "--redis-password-file", pwFile}, true, "archived 5 events"},
	} {
		out, err := exec.Command(binary, append([]string{"audit"}, c.args...)...).CombinedOutput()
		if (err == nil) != c.ok || !strings.Contains(string(out), c.want) || strings.Contains(string(out), password) {
			t.Fatalf("moltgate audit %s: %v\n%s\nwant ok=%v and %q, never the password", strings.Join(c.args, " "), err, out, c.ok, c.want)
		}
	}
}
