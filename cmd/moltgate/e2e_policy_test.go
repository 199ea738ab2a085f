package main_test

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/proxy/admin"
)

// policyVersion is one set written to the watched policy directory: an extension whose
// custom deny refuses sessions_list with reason (none when reason is ""), with its test.
// A bad version's rule would refuse with "bad_<n>"; it must never decide a request.
type policyVersion struct {
	good   bool
	reason string
	files  map[string]string
}

func goodVersion(reason, tag string) policyVersion {
	rule := "# version " + tag + "\npackage moltgate.custom\n\ndeny contains {\"reason\": \"never\"} if input.request.tool == \"never_used\"\n"
	test := "package moltgate.custom_test\n\nimport data.moltgate.custom\n\ntest_version if not {\"reason\": \"bad\"} in custom.deny with input as {\"request\": {\"tool\": \"other\"}}\n"
	if reason != "" {
		rule += "\ndeny contains {\"reason\": \"" + reason + "\"} if input.request.tool == \"sessions_list\"\n"
	}
	return policyVersion{good: true, reason: reason, files: map[string]string{"custom.rego": rule, "custom_test.rego": test}}
}

func badVersions(n int) []policyVersion {
	deny := fmt.Sprintf("package moltgate.custom\n\ndeny contains {\"reason\": \"bad_%d\"} if input.request.tool == \"sessions_list\"\n", n)
	return []policyVersion{
		{files: map[string]string{"custom.rego": deny, "custom_test.rego": fmt.Sprintf("package moltgate.custom_test\n\ntest_bad_%d if false\n", n)}},
		{files: map[string]string{"custom.rego": deny + "\nbroken contains if\n", "custom_test.rego": "package moltgate.custom_test\n\ntest_ok if true\n"}},
		{files: map[string]string{"custom.rego": deny + "\ntypo if input.request.toool == \"x\"\n", "custom_test.rego": "package moltgate.custom_test\n\ntest_ok if true\n"}},
	}
}

// writeVersion replaces the directory's files, each by a rename, so a reader sees whole files.
func writeVersion(t *testing.T, dir string, v policyVersion) {
	t.Helper()
	for name, body := range v.files {
		tmp := filepath.Join(dir, ".tmp-"+name)
		if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// Issue 12: the watched policy directory is replaced ten times, with good and bad versions,
// while requests flow through the built binary: no request fails or is decided by a bad
// version, every good version goes live, each reload is audited and a refusal shows in
// /readyz.
func TestPolicyHotSwapEndToEnd(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"ok":true}`))
	}))
	defer upstream.Close()
	dir := t.TempDir()
	policyDir, keyring := filepath.Join(dir, "policies"), filepath.Join(dir, "keyring")
	if err := os.Mkdir(policyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeVersion(t, policyDir, goodVersion("", "initial"))
	if err := os.WriteFile(keyring, []byte("1:"+hex.EncodeToString(bytes.Repeat([]byte{7}, 32))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A generous decision limit: the test is about which set decides, and a reload running
	// its tests beside -race traffic on a shared machine must not turn into timeouts.
	config := fmt.Sprintf(keysConfig, "@DATA@", keyring, upstream.URL) + "audit:\n  archive: {interval: 50ms}\npolicies:\n  dir: \"" + policyDir + "\"\n  watch: true\n  timeout: 10s\n"
	mg := startMoltgate(t, config)
	gw, err := mg.admin().Create(t.Context(), admin.CreateRequest{ID: "gwhot", Tenant: "t_hot", Owner: "user_1", Upstream: upstream.URL})
	if err != nil {
		t.Fatal(err)
	}

	// Load: HTTP tool calls, each answered 200 or refused by a good version's reason.
	var (
		stop     atomic.Bool
		wg       sync.WaitGroup
		mu       sync.Mutex
		seen     = map[string]int{}
		requests atomic.Int64
	)
	client := &http.Client{}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				req, _ := http.NewRequest("POST", mg.proxyURL+"/tools/invoke", strings.NewReader(`{"tool":"sessions_list","args":{}}`))
				req.Host = "gwhot.gw.localhost"
				req.Header.Set("Authorization", "Bearer "+gw.Token)
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				key := "transport error"
				if err == nil {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					// Each refusal names its own decision (issue 12): answers are told apart without it.
					key = fmt.Sprintf("%d %s", resp.StatusCode, refusalDecisionID.ReplaceAll(bytes.TrimSpace(body), nil))
				}
				requests.Add(1)
				mu.Lock()
				seen[key]++
				mu.Unlock()
			}
		}()
	}
	decidedBy := func(reason string) func() bool {
		return func() bool {
			code, body := postJSON(t, mg.proxyURL+"/tools/invoke", "gwhot.gw.localhost", gw.Token, `{"tool":"sessions_list","args":{}}`)
			if reason == "" {
				return code == http.StatusOK
			}
			return code == http.StatusForbidden && strings.Contains(body, `"reason":"`+reason+`"`)
		}
	}
	readyz := func() string {
		resp, err := http.Get(mg.adminURL + "/readyz")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, b)
	}

	revision := func() string {
		r := readyz()
		if i := strings.Index(r, "policy revision "); i >= 0 {
			return strings.Fields(r[i+len("policy revision "):])[0]
		}
		return ""
	}
	goods, bads := 0, 0
	allowed := map[string]bool{"": true}
	for i := range 10 {
		var v policyVersion
		if i%2 == 0 {
			v = goodVersion(fmt.Sprintf("good_%d", i), fmt.Sprint(i))
			if i%4 == 0 {
				v = goodVersion("", fmt.Sprint(i))
			}
		} else {
			v = badVersions(i)[(i/2)%3]
		}
		if v.good {
			allowed[v.reason] = true
			goods++
			rev := revision()
			writeVersion(t, policyDir, v)
			waitUntil(t, fmt.Sprintf("version %d live", i), func() bool { return revision() != rev && decidedBy(v.reason)() })
			continue
		}
		bads++
		writeVersion(t, policyDir, v)
		waitUntil(t, fmt.Sprintf("version %d refused", i), func() bool { return strings.Contains(readyz(), "policy candidate refused") })
		if r := readyz(); !strings.HasPrefix(r, "200 ") {
			t.Errorf("/readyz after a refused set: %s, want 200 with the refusal", r)
		}
		// Put the last good version back, as a team fixing its mistake would.
		rev := revision()
		writeVersion(t, policyDir, goodVersion("", fmt.Sprintf("fix %d", i)))
		waitUntil(t, "good set back", func() bool { return revision() != rev && decidedBy("")() })
	}
	stop.Store(true)
	wg.Wait()

	if requests.Load() == 0 {
		t.Fatal("no requests ran")
	}
	for key, n := range seen {
		ok := strings.HasPrefix(key, "200 ")
		for reason := range allowed {
			ok = ok || (reason != "" && key == `403 {"error":"forbidden","reason":"`+reason+`"}`)
		}
		if !ok || strings.Contains(key, "bad_") {
			t.Errorf("%d requests answered %q: not an answer of a good version", n, key)
		}
	}
	// Every good version and every fix went live, every bad one was refused: audited (the
	// watcher may reload a version more than once, never less).
	var live, refused int
	waitUntil(t, "reloads audited", func() bool {
		live, refused = 0, 0
		page, err := mg.admin().Audit(t.Context(), admin.AuditQuery{Type: audit.TypePolicyReload, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Events {
			if err := audit.CheckSchema(e); err != nil {
				t.Fatalf("event %d: %v", e.Seq, err)
			}
			if e.Outcome == audit.OutcomeSuccess {
				live++
			} else if e.Reason == "policy_refused" && e.Details["error"] != "" {
				refused++
			}
		}
		return live >= goods+bads && refused >= bads
	})
	t.Logf("%d requests; answers %v", requests.Load(), seen)
}
