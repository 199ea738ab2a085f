package main_test

import (
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
	"syscall"
	"testing"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
)

// TestProvisionLocalEndToEnd: issue 14, the local driver through the built binary and the
// real OpenClaw. `gateway create` gives tenant acme, which holds an OpenAI key, a gateway of
// its own; its owner reaches it through moltgate over HTTP and WebSocket; its model calls
// reach the loopback provider stand-in with that key (the stand-in refuses any other);
// `gateway rotate-token` swaps its token while requests flow, and none fails; `gateway
// destroy` leaves no process, folder or registry record.
func TestProvisionLocalEndToEnd(t *testing.T) {
	llm := testenv.NewLLM(t, llmReply)
	clerk := clerktest.New(t)
	dir := t.TempDir()

	// The gateways' model provider: the stand-in, with the key from the environment the
	// local driver gives each gateway (the tenant's active openai key as OPENAI_API_KEY).
	provider := llm.ProviderConfig("moltgate-llm", "stand-in-1")
	provider["models"].(map[string]any)["providers"].(map[string]any)["moltgate-llm"].(map[string]any)["apiKey"] = "${OPENAI_API_KEY}"
	provider["gateway"] = map[string]any{"http": map[string]any{"endpoints": map[string]any{"chatCompletions": map[string]any{"enabled": true}}}}
	ocConfig := filepath.Join(dir, "openclaw-extra.json")
	writeJSON(t, ocConfig, provider)
	mg := startMoltgate(t, fmt.Sprintf(`
listen: @LISTEN@
admin_listen: @ADMIN@
data_dir: @DATA@
admin_token: {file: @ADMINTOKEN@}
keystore:
  verify_urls: {openai: "%s/models"}
provisioner:
  local:
    openclaw_bin: %s
    openclaw_config: %s
`, llm.URL, filepath.Join(testenv.OpenClawDir(t), "node_modules", ".bin", "openclaw"), ocConfig)+clerkConfig(t, clerk))
	var output strings.Builder // everything the CLI printed, for the secret scan

	secretFile := filepath.Join(dir, "openai.key")
	if err := os.WriteFile(secretFile, []byte(llm.APIKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var key struct{ ID string }
	out := mg.cli(t, "keys", "add", "--tenant", "acme", "--provider", "openai", "--secret-file", secretFile, "--json")
	output.WriteString(out)
	if err := json.Unmarshal([]byte(out), &key); err != nil || key.ID == "" {
		t.Fatalf("keys add: %v\n%s", err, out)
	}
	for _, verb := range []string{"verify", "activate"} {
		output.WriteString(mg.cli(t, "keys", verb, "--tenant", "acme", key.ID))
	}

	start := time.Now()
	out = mg.cli(t, "gateway", "create", "--id", "prov", "--tenant", "acme", "--owner", "user_prov_owner")
	output.WriteString(out)
	t.Logf("gateway create took %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	for _, want := range []string{"local.process", "local.ready", "register", "probe", "prov is ready and answers through moltgate"} {
		if !strings.Contains(out, want) {
			t.Fatalf("gateway create output lacks %q:\n%s", want, out)
		}
	}
	gwDir := filepath.Join(mg.dataDir, "gateways", "prov")
	pid := runPID(t, gwDir)

	owner := clerk.Mint(clerktest.Claims{Subject: "user_prov_owner", Expiry: time.Now().Add(time.Hour)})
	host := "prov.gw.localhost"
	request := func(method, path, body string) (int, string) {
		req, err := http.NewRequestWithContext(t.Context(), method, mg.proxyURL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		req.Header.Set("Authorization", "Bearer "+owner)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	t.Run("owner over HTTP, and model calls carry the tenant's key", func(t *testing.T) {
		if code, body := request("GET", "/control-ui-config.json", ""); code != 200 {
			t.Fatalf("GET /control-ui-config.json as owner: %d %.200s", code, body)
		}
		code, body := request("POST", "/v1/chat/completions",
			`{"model":"openclaw/default","messages":[{"role":"user","content":"say hello through the provisioned gateway"}]}`)
		if code != 200 || !strings.Contains(body, llmReply) {
			t.Fatalf("chat completion as owner: %d %.300s", code, body)
		}
		if llm.Requests() == 0 {
			t.Fatal("the stand-in saw no model call")
		}
	})

	t.Run("owner over WebSocket", func(t *testing.T) {
		ctx := ctxTimeout(t, 60*time.Second)
		oc, _, err := dialMoltgateFrom(ctx, mg, "127.0.0.1", "ws://"+host+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer oc.Close()
		if f, err := oc.Connect(ctx, map[string]any{"token": owner}); err != nil || !f.OK {
			t.Fatalf("connect as owner: %v %v", err, f.Error)
		}
		if f, err := oc.Request(ctx, "sessions.list", map[string]any{}); err != nil || !f.OK {
			t.Fatalf("sessions.list: %v %v", err, f.Error)
		}
	})

	t.Run("rotate the token under traffic, no request fails", func(t *testing.T) {
		var ok, failed atomic.Int64
		var firstFail atomic.Value
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					var code int
					var body string
					if i == 0 {
						code, body = request("GET", "/control-ui-config.json", "")
					} else {
						code, body = request("POST", "/tools/invoke", `{"tool":"sessions_list","args":{}}`)
					}
					if code == 200 {
						ok.Add(1)
					} else {
						failed.Add(1)
						firstFail.CompareAndSwap(nil, fmt.Sprintf("%d %.200s", code, body))
					}
				}
			})
		}
		testenv.WaitUntil(t, "traffic to flow", 30*time.Second, func() bool { return ok.Load() > 20 })
		out := mg.cli(t, "gateway", "rotate-token", "prov")
		output.WriteString(out)
		before := ok.Load()
		testenv.WaitUntil(t, "traffic after the rotation", 30*time.Second, func() bool { return ok.Load() > before+20 })
		close(stop)
		wg.Wait()
		t.Logf("%d requests, %s retried across the switch; rotate-token:\n%s", ok.Load()+failed.Load(),
			metricValue(t, mg, "moltgate_provisioner_token_overlap_retries_total"), out)
		if n := failed.Load(); n > 0 {
			t.Fatalf("%d of %d requests failed during the rotation; first: %v", n, n+ok.Load(), firstFail.Load())
		}
		if p := runPID(t, gwDir); p != pid {
			t.Errorf("the rotation restarted the gateway (pid %d → %d)", pid, p)
		}
		if !strings.Contains(mg.cli(t, "gateway", "status", "prov"), "token generation\t2") {
			t.Error("status does not show token generation 2")
		}
	})

	t.Run("destroy leaves no process, folder or record", func(t *testing.T) {
		out := mg.cli(t, "gateway", "destroy", "prov")
		output.WriteString(out)
		if !strings.Contains(out, "prov destroyed") {
			t.Fatalf("gateway destroy:\n%s", out)
		}
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("the gateway process %d still runs", pid)
		}
		if _, err := os.Stat(gwDir); !os.IsNotExist(err) {
			t.Errorf("the gateway's folder is left: %v", err)
		}
		if list := mg.cli(t, "gateway", "list"); strings.Contains(list, "prov") {
			t.Errorf("the registry still lists it:\n%s", list)
		}
		if code, _ := request("GET", "/control-ui-config.json", ""); code != 404 {
			t.Errorf("a request to the destroyed gateway: %d, want 404", code)
		}
	})

	t.Run("audited, and the key never shown", func(t *testing.T) {
		steps, opens := map[string]bool{}, 0
		for _, e := range mg.events(t) {
			// Issue 16: the provisioner's events fit the schema the README gives, too.
			if err := audit.CheckSchema(e); err != nil {
				t.Errorf("event %d (%s %s): %v", e.Seq, e.Type, e.Action, err)
			}
			switch {
			case e.Type == audit.TypeProvisionStep && e.Gateway == "prov" && e.Outcome == "success":
				steps[e.Action+" "+e.Details["step"]] = true
			case e.Type == audit.TypeSecretOpen && e.Tenant == "acme" && e.Details["purpose"] == "provision":
				opens++
			}
		}
		for _, want := range []string{"provision.ensure token", "provision.ensure local.process", "provision.ensure register",
			"provision.ensure probe", "provision.destroy local.dir", "provision.forget "} {
			if !steps[want] {
				t.Errorf("no provision.step event %q; have %v", want, steps)
			}
		}
		if opens == 0 {
			t.Error("no secret.open event for the provisioner")
		}
		collectFile(t, &output, mg.logPath)
		filepath.WalkDir(filepath.Join(mg.dataDir, "audit"), func(path string, d os.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				collectFile(t, &output, path)
			}
			return nil
		})
		if strings.Contains(output.String(), llm.APIKey) {
			t.Fatal("the tenant's key shows in CLI output, the log or the audit trail")
		}
	})
}

// runPID is the gateway process's pid as the local driver recorded it.
func runPID(t *testing.T, gwDir string) int {
	t.Helper()
	var ri struct{ PID int }
	b, err := os.ReadFile(filepath.Join(gwDir, "run.json"))
	if err != nil || json.Unmarshal(b, &ri) != nil || ri.PID == 0 {
		t.Fatalf("run.json of %s: %v %s", gwDir, err, b)
	}
	return ri.PID
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err == nil {
		err = os.WriteFile(path, b, 0o600)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// metricValue reads one unlabelled metric from moltgate's /metrics.
func metricValue(t *testing.T, mg *instance, name string) string {
	t.Helper()
	for _, line := range strings.Split(scrapeMetrics(t, mg), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			if _, err := strconv.ParseFloat(v, 64); err == nil {
				return v
			}
		}
	}
	return "?"
}
