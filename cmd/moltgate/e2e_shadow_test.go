package main_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy/admin"
)

// retireRoute is a candidate set that retires /retired and allows nothing new.
func retireRoute(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "policy-examples", "retire-route", "retire.rego"))
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// Issue 12: shadow mode, promote and rollback through two `moltgate serve` on one
// redis-server. A candidate shadows the live set on both: exactly the requests it would
// refuse are counted and audited, and nothing changes for them. `policy promote` on A makes
// it live on B within a second (its active revision metric, its decisions); `policy
// rollback` on B brings the configured set back on A.
func TestShadowPromoteRollbackEndToEnd(t *testing.T) {
	const id = "gwshadow"
	gw := testenv.SharedOpenClaw(t, testenv.OpenClawOptions{Token: gatewayToken})
	rdb := testenv.Redis(t)
	cand := replicaPolicies(t)
	if err := os.WriteFile(filepath.Join(cand, "retire.rego"), []byte(retireRoute(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	reps, _ := startReplicasWith(t, 2, rdb.Addr, replicaOptions{env: []string{"MOLTGATE_POLICY_SHADOW_DIR=" + cand}})
	a, b := reps[0], reps[1]
	live, candidate := liveRevision(t, a, "live"), liveRevision(t, a, "candidate")
	if live == "" || candidate == "" || live == candidate {
		t.Fatalf("revisions on A: live %q, candidate %q: want two different ones", live, candidate)
	}
	if _, err := a.admin().Create(t.Context(), admin.CreateRequest{ID: id, Tenant: "org_shadow", Owner: "user_shadow",
		Upstream: gw.URL, Token: gw.Token}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, "the gateway served on A", 5*time.Second, func() bool {
		status, _, err := proxyGet(a, id, "/", gw.Token)
		return err == nil && status == http.StatusOK
	})

	t.Run("shadow: exactly the differing requests are counted and audited, none refused", func(t *testing.T) {
		before := shadowCount(t, a, "differs")
		paths := []string{"/", "/retired", "/kept", "/retired/x", "/retired"}
		for _, p := range paths {
			status, reason, err := proxyGet(a, id, p, gw.Token)
			if err != nil || reason == "route_retired" {
				t.Fatalf("GET %s on A while shadowing: %d %s (%v), want the live set's decision", p, status, reason, err)
			}
		}
		testenv.WaitUntil(t, "two shadow differences counted on A", 5*time.Second, func() bool {
			return shadowCount(t, a, "differs") == before+2
		})
		page, err := a.admin().Audit(t.Context(), admin.AuditQuery{Type: audit.TypePolicyShadow, Gateway: id})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range page.Events {
			var in struct {
				Request struct{ Path string } `json:"request"`
			}
			if err := json.Unmarshal([]byte(e.Details["input"]), &in); err != nil {
				t.Fatalf("policy.shadow_difference input %q: %v", e.Details["input"], err)
			}
			got = append(got, in.Request.Path)
			if e.Outcome != audit.OutcomeAllow || e.PolicyRevision != live || e.Details["candidate_revision"] != candidate ||
				!strings.HasPrefix(e.Details["candidate"], "deny route_retired 410") {
				t.Errorf("policy.shadow_difference: %+v, want live %s allowed, candidate %s deny route_retired 410", e, live, candidate)
			}
			if strings.Contains(e.Details["input"], gw.Token) {
				t.Errorf("policy.shadow_difference input holds the gateway token: %s", e.Details["input"])
			}
		}
		if want := []string{"/retired", "/retired"}; !slices.Equal(got, want) {
			t.Errorf("audited differences: %q, want %q", got, want)
		}
	})

	t.Run("promote on A is live on B within a second", func(t *testing.T) {
		out := policyCLI(t, a, "promote", "--revision", candidate)
		if !strings.Contains(out, "live: "+candidate+" (promoted)") {
			t.Fatalf("policy promote: %s", out)
		}
		testenv.WaitUntil(t, "the promoted revision live on B", time.Second, func() bool {
			return liveRevision(t, b, "live") == candidate
		})
		if status, reason, _ := proxyGet(b, id, "/retired", gw.Token); status == http.StatusOK || reason != "route_retired" {
			t.Errorf("GET /retired on B after promote: %d %s, want a refusal route_retired", status, reason)
		}
		page, err := a.admin().Audit(t.Context(), admin.AuditQuery{Type: audit.TypePolicyPromote})
		if err != nil || len(page.Events) != 1 || page.Events[0].Details["revision"] != candidate ||
			page.Events[0].Details["from_revision"] != live || page.Events[0].Actor.Kind != "admin_token" {
			t.Errorf("policy.promote events: %+v (%v), want one from %s to %s by the admin token", page.Events, err, live, candidate)
		}
	})

	t.Run("rollback on B re-activates the configured set on A within a second", func(t *testing.T) {
		out := policyCLI(t, b, "rollback")
		if !strings.Contains(out, "live: "+live+" (configured set)") {
			t.Fatalf("policy rollback: %s", out)
		}
		testenv.WaitUntil(t, "the configured revision live on A", time.Second, func() bool {
			return liveRevision(t, a, "live") == live
		})
		if status, reason, _ := proxyGet(a, id, "/retired", gw.Token); reason == "route_retired" {
			t.Errorf("GET /retired on A after rollback: %d %s, want the configured set's decision", status, reason)
		}
		page, err := b.admin().Audit(t.Context(), admin.AuditQuery{Type: audit.TypePolicyRollback})
		if err != nil || len(page.Events) != 1 || page.Events[0].Details["revision"] != live || page.Events[0].Details["from_revision"] != candidate {
			t.Errorf("policy.rollback events: %+v (%v), want one from %s to %s", page.Events, err, candidate, live)
		}
		cmd := exec.Command(binary, "policy", "rollback", "--admin-url", a.adminURL)
		cmd.Env = append(os.Environ(), "MOLTGATE_ADMIN_TOKEN="+a.adminToken)
		if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "no_earlier_revision") {
			t.Errorf("a second rollback: %v\n%s\nwant a refusal no_earlier_revision", err, out)
		}
	})
}

// policyCLI runs `moltgate policy VERB ARGS... --admin-url` against in.
func policyCLI(t *testing.T, in *instance, verb string, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"policy", verb, "--admin-url", in.adminURL}, args...)...)
	cmd.Env = append(os.Environ(), "MOLTGATE_ADMIN_TOKEN="+in.adminToken)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("moltgate policy %s: %v\n%s", verb, err, out)
	}
	return string(out)
}

var revisionInfo = regexp.MustCompile(`(?m)^moltgate_policy_active_revision_info\{revision="([^"]*)",set="([^"]*)"\} 1$`)

// liveRevision reads moltgate_policy_active_revision_info of set ("live", "candidate") from in.
func liveRevision(t *testing.T, in *instance, set string) string {
	t.Helper()
	for _, m := range revisionInfo.FindAllStringSubmatch(scrapeMetrics(t, in), -1) {
		if m[2] == set {
			return m[1]
		}
	}
	return ""
}

// shadowCount reads moltgate_policy_shadow_decisions_total{outcome} from in.
func shadowCount(t *testing.T, in *instance, outcome string) float64 {
	t.Helper()
	prefix := `moltgate_policy_shadow_decisions_total{outcome="` + outcome + `"} `
	for line := range strings.SplitSeq(scrapeMetrics(t, in), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s%s: %v", prefix, v, err)
			}
			return f
		}
	}
	return 0
}

func scrapeMetrics(t *testing.T, in *instance) string {
	t.Helper()
	resp, err := http.Get(in.adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
