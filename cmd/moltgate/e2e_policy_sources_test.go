package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/policies/bundletest"
	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
)

// sourceVersion is a policy set whose custom deny refuses GET /health and the WebSocket
// method sessions.list with reason (nothing when reason is ""), with a test that pins it.
func sourceVersion(reason, tag string) map[string]string {
	rule := "# version " + tag + "\npackage moltgate.custom\n\ndeny contains {\"reason\": \"never\"} if input.request.tool == \"never_used\"\n"
	test := "package moltgate.custom_test\n\nimport data.moltgate.custom\n\ntest_other_paths_pass if count(custom.deny) == 0 with input as {\"request\": {\"path\": \"/other\"}}\n"
	if reason != "" {
		rule += "\ndeny contains {\"reason\": \"" + reason + "\"} if input.request.path == \"/health\"\n" +
			"\ndeny contains {\"reason\": \"" + reason + "\"} if input.ws.method == \"sessions.list\"\n"
		test += "\ntest_health_refused if {\"reason\": \"" + reason + "\"} in custom.deny with input as {\"request\": {\"path\": \"/health\"}}\n"
	}
	return map[string]string{"custom.rego": rule, "custom_test.rego": test}
}

// sourceLoad keeps HTTP requests (GET /health, the gateway token) and WebSocket messages
// (sessions.list on sockets of the gateway's owner) flowing through moltgate to the real
// OpenClaw gateway, and counts every answer by what decided it.
type sourceLoad struct {
	stop     atomic.Bool
	wg       sync.WaitGroup
	mu       sync.Mutex
	answers  map[string]int // "http 200", "http 403 <reason>" (moltgate's refusal), "ws ok", "ws refused <reason>", or a failure
	requests atomic.Int64
	messages atomic.Int64
}

func startSourceLoad(t *testing.T, mg *instance, host, gwToken, ownerJWT string) *sourceLoad {
	t.Helper()
	l := &sourceLoad{answers: map[string]int{}}
	count := func(key string) {
		l.mu.Lock()
		l.answers[key]++
		l.mu.Unlock()
	}
	client := &http.Client{Timeout: 30 * time.Second}
	for range 2 {
		l.wg.Go(func() {
			for !l.stop.Load() {
				req, _ := http.NewRequest("GET", mg.proxyURL+"/health", nil)
				req.Host = host
				req.Header.Set("Authorization", "Bearer "+gwToken)
				resp, err := client.Do(req)
				l.requests.Add(1)
				if err != nil {
					count("http transport error")
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				body = bytes.TrimSpace(body)
				switch {
				case resp.StatusCode == http.StatusOK:
					count("http 200")
				case resp.StatusCode == http.StatusForbidden:
					// moltgate's refusal: {"error":"forbidden","reason":R,"decision_id":ID}.
					var r struct {
						Error, Reason string
						DecisionID    string `json:"decision_id"`
					}
					if json.Unmarshal(body, &r) != nil || r.Error != "forbidden" || r.DecisionID == "" {
						count("http 403 not a refusal: " + string(body))
					} else {
						count("http 403 " + r.Reason)
					}
				default:
					count(fmt.Sprintf("http %d %s", resp.StatusCode, body))
				}
			}
		})
	}
	for range 2 {
		oc, _, err := dialMoltgateFrom(ctxTimeout(t, 60*time.Second), mg, "127.0.0.1", "ws://"+host+"/", nil)
		if err != nil {
			t.Fatalf("ws upgrade: %v", err)
		}
		t.Cleanup(func() { oc.Conn.CloseNow() })
		if f, err := oc.Connect(ctxTimeout(t, 60*time.Second), map[string]any{"token": ownerJWT}); err != nil || !f.OK {
			t.Fatalf("ws connect: %.300s (%v)", f.Raw, err)
		}
		l.wg.Go(func() {
			for !l.stop.Load() {
				f, err := oc.Request(ctxTimeout(t, 60*time.Second), "sessions.list", map[string]any{})
				l.messages.Add(1)
				switch {
				case err != nil:
					count("ws transport error: " + err.Error())
					return
				case f.OK:
					count("ws ok")
				case f.Error != nil && strings.HasPrefix(f.Error.Message, "moltgate: "):
					count("ws refused " + strings.TrimPrefix(f.Error.Message, "moltgate: "))
				default:
					count(fmt.Sprintf("ws error %.200s", f.Raw))
				}
			}
		})
	}
	return l
}

// finish stops the load and checks every answer came from a good version: allowed, or
// refused with a reason in good.
func (l *sourceLoad) finish(t *testing.T, good map[string]bool) {
	t.Helper()
	l.stop.Store(true)
	l.wg.Wait()
	if l.requests.Load() == 0 || l.messages.Load() == 0 {
		t.Fatalf("load: %d requests, %d messages; want both", l.requests.Load(), l.messages.Load())
	}
	for key, n := range l.answers {
		ok := key == "http 200" || key == "ws ok"
		for reason := range good {
			ok = ok || key == "http 403 "+reason || key == "ws refused "+reason
		}
		if !ok {
			t.Errorf("%d answered %q: not the answer of a good version", n, key)
		}
	}
	t.Logf("%d requests, %d messages; answers %v", l.requests.Load(), l.messages.Load(), l.answers)
}

// policyRevision is the revision of the set in force, from /readyz.
func policyRevision(mg *instance) string {
	_, r, _ := strings.Cut(readyzOf(mg), "policy revision ")
	rev, _, _ := strings.Cut(r, "\n")
	return rev
}

func readyzOf(mg *instance) string {
	resp, err := http.Get(mg.adminURL + "/readyz")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, b)
}

// Issue 12: hot swap under load, from both sources. HTTP requests and WebSocket messages flow
// through the built binary to a real OpenClaw gateway while (1) the watched policy directory
// is replaced ten times with good and bad versions, and (2) a local bundle server serves
// new, tampered, unsigned, foreign-signed and failing bundles. No request or message fails
// or is decided by a bad version; every good version goes live; every bad one is refused
// (counted, in /readyz, audited) and each reload is audited.
func TestPolicySourcesHotSwapEndToEnd(t *testing.T) {
	const owner = "user_srcswap_owner"
	gw := testenv.SharedOpenClaw(t, testenv.OpenClawOptions{Token: gatewayToken})
	clerk := clerktest.New(t)
	tokFile := filepath.Join(t.TempDir(), "gw.token")
	if err := os.WriteFile(tokFile, []byte(gw.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A generous decision limit: the test is about which set decides, and a reload running
	// its tests beside -race traffic on a shared machine must not turn into timeouts.
	start := func(t *testing.T, id, policy string) (*instance, *sourceLoad) {
		mg := startMoltgate(t, `
listen: @LISTEN@
admin_listen: @ADMIN@
data_dir: @DATA@
admin_token: {file: @ADMINTOKEN@}
audit:
  archive: {interval: 50ms}
websocket: {messages_per_second: 100000, burst: 100000}
`+policy+clerkConfig(t, clerk))
		mg.cli(t, "gateway", "add", "--id", id, "--tenant", "tenant-"+id, "--owner", owner, "--upstream", gw.URL, "--token-file", tokFile)
		return mg, startSourceLoad(t, mg, id+".gw.localhost", gw.Token, clerk.Mint(clerktest.Claims{Subject: owner}))
	}
	// decidedBy: a fresh request and message are both answered as the version with reason
	// decides them.
	decidedBy := func(mg *instance, host, reason string) func() bool {
		return func() bool {
			code, body := getWithToken(mg.proxyURL+"/health", host, gw.Token)
			if reason == "" {
				return code == http.StatusOK
			}
			return code == http.StatusForbidden && strings.Contains(body, `"reason":"`+reason+`"`)
		}
	}
	refused := func(mg *instance) float64 {
		v, _ := strconv.ParseFloat(metricValue(t, mg, `moltgate_policy_reloads_total{result="refused"}`), 64)
		return v
	}
	audited := func(t *testing.T, mg *instance, goods, bads int, revisions []string) {
		t.Helper()
		waitUntil(t, "reloads audited", func() bool {
			page, err := mg.admin().Audit(t.Context(), admin.AuditQuery{Type: audit.TypePolicyReload, Limit: 1000})
			if err != nil {
				t.Fatal(err)
			}
			live, refusedN, seen := 0, 0, map[string]bool{}
			for _, e := range page.Events {
				if err := audit.CheckSchema(e); err != nil {
					t.Fatalf("event %d: %v", e.Seq, err)
				}
				if e.Outcome == audit.OutcomeSuccess {
					live++
					seen[e.Details["bundle_revision"]] = true
				} else if e.Reason == "policy_refused" && e.Details["error"] != "" {
					refusedN++
				}
			}
			for _, r := range revisions {
				if !seen[r] {
					return false
				}
			}
			return live >= goods && refusedN >= bads
		})
	}

	t.Run("directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "policies")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		writeVersion(t, dir, policyVersion{files: sourceVersion("", "initial")})
		mg, load := start(t, "gwsrcdir", "policies:\n  dir: \""+dir+"\"\n  watch: true\n  timeout: 10s\n")
		host := "gwsrcdir.gw.localhost"
		bad := func(i int) map[string]string {
			files := sourceVersion(fmt.Sprintf("bad_%d", i), fmt.Sprint(i))
			switch i % 3 {
			case 0:
				files["custom_test.rego"] = fmt.Sprintf("package moltgate.custom_test\n\ntest_bad_%d if false\n", i)
			case 1:
				files["custom.rego"] += "\nbroken contains if\n"
			default:
				files["custom.rego"] += "\ntypo if input.request.toool == \"x\"\n"
			}
			return files
		}
		good := map[string]bool{}
		goods, bads := 0, 0
		for i := range 10 {
			if i%2 == 1 {
				bads++
				before := refused(mg)
				writeVersion(t, dir, policyVersion{files: bad(i)})
				waitUntil(t, fmt.Sprintf("version %d refused", i), func() bool { return refused(mg) > before })
				if r := readyzOf(mg); !strings.HasPrefix(r, "200 ") || !strings.Contains(r, "policy candidate refused") {
					t.Errorf("/readyz after a refused set: %s, want 200 with the refusal", r)
				}
			}
			reason := ""
			if i%4 < 2 {
				reason = fmt.Sprintf("good_%d", i)
			}
			good[reason], goods = true, goods+1
			rev := policyRevision(mg)
			writeVersion(t, dir, policyVersion{files: sourceVersion(reason, fmt.Sprint(i))})
			waitUntil(t, fmt.Sprintf("version %d live", i), func() bool {
				return policyRevision(mg) != rev && decidedBy(mg, host, reason)()
			})
		}
		load.finish(t, good)
		audited(t, mg, goods, bads, nil)
	})

	t.Run("bundle", func(t *testing.T) {
		priv, pub, err := bundletest.KeyPair()
		if err != nil {
			t.Fatal(err)
		}
		foreign, _, err := bundletest.KeyPair()
		if err != nil {
			t.Fatal(err)
		}
		keyFile := filepath.Join(t.TempDir(), "bundle.pub")
		if err := os.WriteFile(keyFile, pub, 0o600); err != nil {
			t.Fatal(err)
		}
		build := func(files map[string]string, rev string, key []byte, tamper bool) []byte {
			fsys := fstest.MapFS{}
			for name, body := range files {
				fsys[name] = &fstest.MapFile{Data: []byte(body)}
			}
			b, err := policies.BuildBundle(fsys, rev)
			if err != nil {
				t.Fatal(err)
			}
			if key != nil {
				if err := policies.SignBundle(&b, string(key), "ES256", ""); err != nil {
					t.Fatal(err)
				}
			}
			if tamper { // after signing: what an attacker on the way would do
				b.Modules = append([]bundle.ModuleFile(nil), b.Modules...)
				for i, m := range b.Modules {
					if strings.HasSuffix(m.Path, "custom.rego") {
						b.Modules[i].Raw = []byte(files["custom.rego"] + "\ndeny contains {\"reason\": \"" + rev + "\"} if input.request.path == \"/health\"\n")
					}
				}
			}
			body, err := bundletest.Encode(b)
			if err != nil {
				t.Fatal(err)
			}
			return body
		}
		srv := bundletest.New()
		t.Cleanup(srv.Close)
		srv.Publish(build(sourceVersion("", "initial"), "initial", priv, false))
		mg, load := start(t, "gwsrcbundle", fmt.Sprintf("policies:\n  timeout: 10s\n  bundle:\n    url: %s/moltgate.tar.gz\n    poll_interval: 50ms\n    verification_key: {file: %s}\n    algorithm: ES256\n", srv.URL, keyFile))
		host := "gwsrcbundle.gw.localhost"
		if r := readyzOf(mg); !strings.Contains(r, `policy bundle revision "initial"`) {
			t.Fatalf("/readyz at start: %s, want the initial bundle's revision", r)
		}
		bad := func(i int) []byte {
			rev := fmt.Sprintf("bad_%d", i)
			files := sourceVersion(rev, rev)
			switch (i / 2) % 4 {
			case 0:
				return build(sourceVersion("", rev), rev, priv, true) // tampered
			case 1:
				return build(files, rev, nil, false) // unsigned
			case 2:
				return build(files, rev, foreign, false) // signed by another key
			}
			files["custom_test.rego"] += "\ntest_bad if false\n"
			return build(files, rev, priv, false) // signed, but its tests fail
		}
		good := map[string]bool{}
		goods, bads := 0, 0
		var revisions []string
		for i := range 10 {
			if i%2 == 1 {
				bads++
				before := refused(mg)
				srv.Publish(bad(i))
				waitUntil(t, fmt.Sprintf("bundle %d refused", i), func() bool { return refused(mg) > before })
				if r := readyzOf(mg); !strings.HasPrefix(r, "200 ") || !strings.Contains(r, "policy candidate refused") {
					t.Errorf("/readyz after a refused bundle: %s, want 200 with the refusal", r)
				}
			}
			reason, rev := "", fmt.Sprintf("good_%d", i)
			if i%4 < 2 {
				reason = rev
			}
			good[reason], goods = true, goods+1
			revisions = append(revisions, rev)
			srv.Publish(build(sourceVersion(reason, rev), rev, priv, false))
			waitUntil(t, fmt.Sprintf("bundle %d live", i), func() bool {
				return strings.Contains(readyzOf(mg), `policy bundle revision "`+rev+`"`) && decidedBy(mg, host, reason)()
			})
		}
		// The server fails: the set in force keeps deciding, moltgate stays ready and says why.
		srv.Fail(http.StatusBadGateway)
		waitUntil(t, "poll failure shown", func() bool { return strings.Contains(readyzOf(mg), "policy bundle poll failed") })
		if r := readyzOf(mg); !strings.HasPrefix(r, "200 ") {
			t.Errorf("/readyz with the bundle server down: %s, want 200", r)
		}
		load.finish(t, good)
		audited(t, mg, goods, bads, revisions)
	})
}

// getWithToken sends GET url with Host host and the bearer token; it returns the status and
// body (0 on a transport error).
func getWithToken(url, host, token string) (int, string) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return 0, ""
	}
	req.Host = host
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
