package main_test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
)

// llmReply is what the stand-in model answers every turn.
const llmReply = "Hello from the loopback model."

// wsStep is one line the JS client (testdata/ws_client.mjs) prints.
type wsStep struct {
	Step     string          `json:"step"`
	OK       bool            `json:"ok"`
	Methods  int             `json:"methods"`
	Sessions bool            `json:"sessions"`
	Text     string          `json:"text"`
	Errors   []string        `json:"errors"`
	Code     json.RawMessage `json:"code"` // a protocol error code (string) or a close code (number)
	Message  string          `json:"message"`
	Reason   string          `json:"reason"`
	Error    json.RawMessage `json:"error"`

	line string // as printed
}

// jsClient is one run of testdata/ws_client.mjs: openclaw-node under Node 24.
type jsClient struct {
	steps chan wsStep
	cmd   *exec.Cmd
	log   *strings.Builder
}

func startJSClient(t *testing.T, url, token, mode, forbidden string) *jsClient {
	t.Helper()
	ocDir := testenv.OpenClawDir(t)
	script, err := filepath.Abs(filepath.Join("testdata", "ws_client.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir() // openclaw-node keeps a device identity under $HOME/.openclaw
	cmd := exec.Command(filepath.Join(ocDir, "node_modules", ".bin", "node"), script)
	cmd.Env = append(os.Environ(), "HOME="+home, "OPENCLAW_DIR="+ocDir, "MG_URL="+url, "MG_TOKEN="+token,
		"MG_MODE="+mode, "MG_FORBIDDEN="+forbidden, "NODE_NO_WARNINGS=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &jsClient{steps: make(chan wsStep, 16), cmd: cmd, log: &strings.Builder{}}
	cmd.Stderr = c.log // read only after Wait
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(c.steps)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var s wsStep
			if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
				s = wsStep{Step: "garbage"}
			}
			s.line = sc.Text()
			c.steps <- s
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		cmd.Wait()
		if t.Failed() {
			t.Logf("ws client (%s) stderr:\n%s", mode, tail(c.log.String(), 30))
		}
	})
	return c
}

// next waits for the client's next step until the deadline.
func (c *jsClient) next(t *testing.T, want string, within time.Duration) wsStep {
	t.Helper()
	select {
	case s, ok := <-c.steps:
		if !ok {
			t.Fatalf("ws client exited before step %q", want)
		}
		if s.Step != want {
			t.Fatalf("ws client step %q, want %q: %s", s.Step, want, s.line)
		}
		return s
	case <-time.After(within):
		t.Fatalf("no step %q from the ws client within %v", want, within)
	}
	return wsStep{}
}

// patchGatewayConfig applies a config.patch to the gateway directly (with its token), as its
// operator would: here, to point its default model at the loopback stand-in.
func patchGatewayConfig(t *testing.T, gw *testenv.OpenClawGateway, patch map[string]any) {
	t.Helper()
	ctx := ctxTimeout(t, 60*time.Second)
	oc, _, err := testenv.DialOpenClaw(ctx, gw.WSURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	if f, err := oc.Connect(ctx, map[string]any{"token": gw.Token}); err != nil || !f.OK {
		t.Fatalf("connect to the gateway: %v %v", err, f.Error)
	}
	f, err := oc.Request(ctx, "config.get", map[string]any{})
	if err != nil || !f.OK {
		t.Fatalf("config.get: %v %v", err, f.Error)
	}
	var got struct {
		Hash string `json:"hash"`
	}
	json.Unmarshal(f.Payload, &got)
	raw, _ := json.Marshal(patch)
	f, err = oc.Request(ctx, "config.patch", map[string]any{"raw": string(raw), "baseHash": got.Hash, "note": "moltgate e2e: loopback model"})
	if err != nil || !f.OK {
		t.Fatalf("config.patch: %v %v", err, f.Error)
	}
}

// TestWSEndToEnd: openclaw-node, a real client, through the built moltgate to the real
// OpenClaw gateway (issue 3). It identifies itself with a Clerk session JWT in connect's
// auth.token; moltgate swaps in the gateway token, decides every request and keeps deciding.
func TestWSEndToEnd(t *testing.T) {
	gw := testenv.SharedOpenClaw(t, testenv.OpenClawOptions{Token: gatewayToken})
	llm := testenv.NewLLM(t, llmReply)
	patchGatewayConfig(t, gw, llm.ProviderConfig("moltgate-llm", "stand-in-1"))

	clerk := clerktest.New(t)
	mg := startMoltgate(t, `
listen: @LISTEN@
admin_listen: @ADMIN@
data_dir: @DATA@
admin_token: {file: @ADMINTOKEN@}
`+clerkConfig(t, clerk))
	tokFile := filepath.Join(t.TempDir(), "gw.token")
	os.WriteFile(tokFile, []byte(gw.Token+"\n"), 0o600)
	mg.cli(t, "gateway", "add", "--id", "gwws", "--tenant", "tenant-ws", "--owner", "user_ws_owner",
		"--upstream", gw.URL, "--token-file", tokFile)
	for _, m := range [][2]string{{"user_ws_operator", "operator"}, {"user_ws_leaver", "viewer"}, {"user_ws_brief", "viewer"}} {
		mg.cli(t, "gateway", "member", "add", "gwws", m[0], m[1])
	}
	wsURL := "ws://gwws.gw.localhost:" + mg.proxyURL[strings.LastIndex(mg.proxyURL, ":")+1:] + "/"

	// Two clients hold sockets while the first works: one whose membership is removed, one
	// whose session runs out.
	leaver := startJSClient(t, wsURL, clerk.Mint(clerktest.Claims{Subject: "user_ws_leaver"}), "hold", "")
	// The brief session must outlive Node's start-up and the connect on a slow machine, and
	// then run out while the socket is open.
	brief := startJSClient(t, wsURL, clerk.Mint(clerktest.Claims{Subject: "user_ws_brief", Expiry: time.Now().Add(20 * time.Second)}), "hold", "")
	// A machine client on an API token with the viewer role, whose token is revoked.
	made, err := mg.admin().CreateAPIToken(t.Context(), "gwws", admin.APITokenRequest{Name: "e2e monitor", Role: "viewer"})
	if err != nil {
		t.Fatal(err)
	}
	machine := startJSClient(t, wsURL, made.Token, "hold", "")
	worker := startJSClient(t, wsURL, clerk.Mint(clerktest.Claims{Subject: "user_ws_operator"}), "session", "config.get")
	stayer := startJSClient(t, wsURL, clerk.Mint(clerktest.Claims{Subject: "user_ws_owner"}), "hold", "")

	t.Run("operator connects, lists, chats, is refused, carries on", func(t *testing.T) {
		if s := worker.next(t, "connect", 60*time.Second); s.Methods < 100 {
			t.Errorf("hello-ok lists %d methods, want the gateway's full list", s.Methods)
		}
		if s := worker.next(t, "sessions.list", 30*time.Second); !s.OK || !s.Sessions {
			t.Errorf("sessions.list: %s", s.line)
		}
		if s := worker.next(t, "chat", 90*time.Second); s.Text != llmReply || len(s.Errors) > 0 {
			t.Errorf("chat turn: text %q errors %v, want %q", s.Text, s.Errors, llmReply)
		}
		if p := llm.Prompts(); !slices.ContainsFunc(p, func(s string) bool { return strings.Contains(s, "say hello through moltgate") }) {
			t.Errorf("the model never got the prompt; it got %q", p)
		}
		// openclaw-node says it is gateway-client/backend; moltgate names it a CLI client, so
		// the gateway refuses it the controls it keeps for its own backend (here: keeping a
		// prompt out of the transcript).
		if s := worker.next(t, "backend-control", 60*time.Second); s.OK || !strings.Contains(s.Message, "reserved for backend") {
			t.Errorf("agent with suppressPromptPersistence: ok %v message %q, want the gateway's refusal", s.OK, s.Message)
		}
		s := worker.next(t, "forbidden", 30*time.Second)
		if s.OK || string(s.Code) != `"FORBIDDEN"` || !strings.Contains(s.Message, "role_forbids") {
			t.Errorf("config.get as operator: ok %v code %s message %q, want FORBIDDEN role_forbids", s.OK, s.Code, s.Message)
		}
		if s := worker.next(t, "after", 30*time.Second); !s.OK || !s.Sessions {
			t.Errorf("sessions.list after the refusal: %s", s.line)
		}
		if s := worker.next(t, "closed", 10*time.Second); string(s.Code) != "1000" && string(s.Code) != "1005" {
			t.Errorf("client's own close arrived as %s %q", s.Code, s.Reason)
		}
	})

	t.Run("member removed through the admin API loses the socket within a second", func(t *testing.T) {
		leaver.next(t, "connect", 60*time.Second)
		leaver.next(t, "ready", 5*time.Second)
		if _, err := mg.admin().RemoveMember(t.Context(), "gwws", "user_ws_leaver"); err != nil {
			t.Fatalf("remove member: %v", err)
		}
		s := leaver.next(t, "closed", time.Second)
		if string(s.Code) != "1008" || !strings.Contains(s.Reason, "not_a_member") {
			t.Errorf("close %s %q, want 1008 with not_a_member", s.Code, s.Reason)
		}
	})

	t.Run("API token revoked through the admin API loses the socket within a second", func(t *testing.T) {
		machine.next(t, "connect", 60*time.Second)
		machine.next(t, "ready", 5*time.Second)
		if _, err := mg.admin().RevokeAPIToken(t.Context(), "gwws", made.APIToken.ID); err != nil {
			t.Fatalf("revoke: %v", err)
		}
		s := machine.next(t, "closed", time.Second)
		if string(s.Code) != "1008" || !strings.Contains(s.Reason, "unknown_token") {
			t.Errorf("close %s %q, want 1008 with unknown_token", s.Code, s.Reason)
		}
	})

	t.Run("expired session loses the socket", func(t *testing.T) {
		brief.next(t, "connect", 60*time.Second)
		brief.next(t, "ready", 5*time.Second)
		s := brief.next(t, "closed", 45*time.Second)
		if string(s.Code) != "1008" || !strings.Contains(s.Reason, "expired") {
			t.Errorf("close %s %q, want 1008 session expired", s.Code, s.Reason)
		}
	})

	t.Run("audit", func(t *testing.T) {
		var reasons []string
		for _, e := range mg.events(t) {
			if e.Type == audit.TypePolicyDeny && e.Gateway == "gwws" {
				reasons = append(reasons, e.Reason+"/"+e.Details["method"])
			}
		}
		for _, want := range []string{"role_forbids/config.get", "not_a_member/", "session_expired/", "unknown_token/"} {
			if !slices.Contains(reasons, want) {
				t.Errorf("no audit event %q; have %v", want, reasons)
			}
		}
	})

	t.Run("SIGTERM sends close frames", func(t *testing.T) {
		stayer.next(t, "connect", 60*time.Second)
		stayer.next(t, "ready", 5*time.Second)
		if err := mg.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if s := stayer.next(t, "closed", 20*time.Second); string(s.Code) != "1001" {
			t.Errorf("close at shutdown %s %q, want 1001", s.Code, s.Reason)
		}
	})
}
