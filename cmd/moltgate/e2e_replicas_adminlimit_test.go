package main_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy/admin"
)

// adminFrom lists the gateways on in's admin API from the loopback address src with the
// bearer cred, and returns the status, the refusal reason and Retry-After.
func adminFrom(t *testing.T, in *instance, src, cred string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", in.adminURL+"/v1/gateways", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+cred)
	return sendFrom(t, req, src)
}

// TestReplicasShareAdminAuthFailureLimit (issue 11): guesses of the admin token spread over
// two `moltgate serve` on one Redis spend one budget per client address
// (proxy.auth_failures.limit 4, the proxy's budget too): then the address is refused 429
// auth_rate_limited with Retry-After by both replicas' admin APIs, the valid admin token
// included, and by their proxies, while another address is served. Each replica audits the
// refusals once per window.
func TestReplicasShareAdminAuthFailureLimit(t *testing.T) {
	rdb := testenv.Redis(t)
	config, _ := replicaConfig(t, rdb.Addr, replicaOptions{})
	config += "proxy:\n  auth_failures: {limit: 4, window: 1h}\n"
	reps := make([]*instance, 2)
	for i := range reps {
		reps[i] = startBinary(t, binary, []string{fmt.Sprintf("MOLTGATE_AUDIT_REPLICA=adm-%d", i)}, config)
	}
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"ok":true}`)) }))
	t.Cleanup(upstream.Close)
	const id = "gwadmlimit"
	if _, err := reps[0].admin().Create(t.Context(), admin.CreateRequest{ID: id, Tenant: "org_limit", Owner: "user_limit",
		Upstream: upstream.URL}); err != nil {
		t.Fatal(err)
	}
	const attacker, bystander = "127.0.0.2", "127.0.0.4"
	for i := range 4 {
		in := reps[i%len(reps)]
		if status, reason, _ := adminFrom(t, in, attacker, fmt.Sprintf("guess-%d-0123456789", i)); status != http.StatusUnauthorized {
			t.Fatalf("guess %d, on replica %d: %d %q, want 401", i, i%len(reps), status, reason)
		}
	}
	for i, in := range reps {
		// The replica that saw the last guess blocks at once; the other on the change stream.
		testenv.WaitUntil(t, fmt.Sprintf("the block on replica %d", i), 5*time.Second, func() bool {
			status, _, _ := adminFrom(t, in, attacker, in.adminToken)
			return status == http.StatusTooManyRequests
		})
		if status, reason, retry := adminFrom(t, in, attacker, in.adminToken); status != http.StatusTooManyRequests || reason != "auth_rate_limited" || retry == "" {
			t.Errorf("replica %d, the admin token from the blocked address: %d %q Retry-After %q, want 429 auth_rate_limited with Retry-After",
				i, status, reason, retry)
		}
		// The proxy's budget is the same: the gateway, once this replica knows it, refuses too.
		testenv.WaitUntil(t, fmt.Sprintf("the blocked address refused by replica %d's proxy", i), 5*time.Second, func() bool {
			status, reason, _ := getFrom(t, in, attacker, id, nil)
			return status == http.StatusTooManyRequests && reason == "auth_rate_limited"
		})
		if status, reason, _ := adminFrom(t, in, bystander, in.adminToken); status != http.StatusOK {
			t.Errorf("replica %d, another address with the admin token: %d %q, want 200", i, status, reason)
		}
	}

	// One event per replica: once per window, not per refusal.
	count := func() (map[string]int, string) {
		out, err := exec.Command(binary, "audit", "query", "--redis", rdb.Addr, "--type", "authn.failure").CombinedOutput()
		if err != nil {
			t.Fatalf("audit query: %v\n%s", err, out)
		}
		per := map[string]int{}
		for line := range strings.SplitSeq(string(out), "\n") {
			if strings.Contains(line, `"reason":"auth_rate_limited"`) && strings.Contains(line, `"client_ip":"`+attacker+`"`) &&
				strings.Contains(line, `"path":"/v1/gateways"`) {
				_, after, _ := strings.Cut(line, `"replica":"`)
				replica, _, _ := strings.Cut(after, `"`)
				per[replica]++
			}
		}
		return per, string(out)
	}
	testenv.WaitUntil(t, "both replicas' refusal events in Redis", 10*time.Second, func() bool { per, _ := count(); return len(per) == len(reps) })
	if per, out := count(); len(per) != len(reps) || per["adm-0"] != 1 || per["adm-1"] != 1 {
		t.Errorf("admin auth_rate_limited events per replica: %v, want one each\n%s", per, out)
	}
}
