package main_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy/admin"
)

// getFrom sends GET / for gateway id to in's proxy from the loopback address src, with
// headers hdr, and returns the status, the refusal reason and Retry-After.
func getFrom(t *testing.T, in *instance, src, id string, hdr map[string]string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", in.proxyURL+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = id + ".gw.localhost"
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return sendFrom(t, req, src)
}

// sendFrom sends req from the loopback address src, and returns the status, the refusal
// reason and Retry-After.
func sendFrom(t *testing.T, req *http.Request, src string) (int, string, string) {
	t.Helper()
	listen := req.URL.Host
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, listen)
		}}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, refusalReason(body), resp.Header.Get("Retry-After")
}

// TestReplicasShareAuthFailureLimit (issue 11): three `moltgate serve` on one Redis keep one
// budget of failed authentications per client address. Four failures spread over the
// replicas spend it (proxy.auth_failures.limit 4); then the client is refused 429
// auth_rate_limited by every replica (the block travels on the change stream), a valid token
// included, while other addresses are served. X-Forwarded-For from an untrusted peer neither evades the limit nor frames the
// address it claims. Each replica audits the refusals once per window.
func TestReplicasShareAuthFailureLimit(t *testing.T) {
	rdb := testenv.Redis(t)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"ok":true}`)) }))
	t.Cleanup(upstream.Close)
	config, _ := replicaConfig(t, rdb.Addr, replicaOptions{})
	config += "proxy:\n  auth_failures: {limit: 4, window: 1h}\n"
	reps := make([]*instance, 3)
	for i := range reps {
		reps[i] = startBinary(t, binary, []string{fmt.Sprintf("MOLTGATE_AUDIT_REPLICA=lim-%d", i)}, config)
	}
	const id = "gwlimit"
	token := fmt.Sprintf("%064x", 0x11e1)
	if _, err := reps[0].admin().Create(t.Context(), admin.CreateRequest{ID: id, Tenant: "org_limit", Owner: "user_limit",
		Upstream: upstream.URL, Token: token}); err != nil {
		t.Fatal(err)
	}
	valid := map[string]string{"Authorization": "Bearer " + token}
	for i, in := range reps {
		testenv.WaitUntil(t, fmt.Sprintf("the gateway served on replica %d", i), 10*time.Second, func() bool {
			status, _, _ := getFrom(t, in, "127.0.0.9", id, valid)
			return status == http.StatusOK
		})
	}

	// The attacker, 127.0.0.2, claims another address in every request: it is no trusted
	// proxy, so its own address pays.
	const attacker, framed, bystander = "127.0.0.2", "127.0.0.3", "127.0.0.4"
	for i := range 4 {
		hdr := map[string]string{"Authorization": fmt.Sprintf("Bearer %064x", i), "X-Forwarded-For": framed}
		if status, reason, _ := getFrom(t, reps[i%len(reps)], attacker, id, hdr); status != http.StatusUnauthorized {
			t.Fatalf("failure %d, on replica %d: %d %q, want 401", i, i%len(reps), status, reason)
		}
	}
	for i, in := range reps {
		// The replica that saw the last failure blocks at once; the block reaches the others
		// on the change stream (within a second, but the machine may be loaded).
		testenv.WaitUntil(t, fmt.Sprintf("the block on replica %d", i), 5*time.Second, func() bool {
			status, _, _ := getFrom(t, in, attacker, id, valid)
			return status == http.StatusTooManyRequests
		})
		for _, hdr := range []map[string]string{valid, {"Authorization": "Bearer " + token, "X-Forwarded-For": bystander}} {
			status, reason, retry := getFrom(t, in, attacker, id, hdr)
			if status != http.StatusTooManyRequests || reason != "auth_rate_limited" || retry == "" {
				t.Errorf("replica %d, the blocked address with a valid token (headers %v): %d %q Retry-After %q, want 429 auth_rate_limited with Retry-After",
					i, hdr, status, reason, retry)
			}
		}
		for _, src := range []string{framed, bystander} {
			if status, reason, _ := getFrom(t, in, src, id, valid); status != http.StatusOK {
				t.Errorf("replica %d, %s with a valid token: %d %q, want 200", i, src, status, reason)
			}
		}
	}

	// One event per replica that refused: once per window, not per request.
	count := func() (map[string]int, string) {
		out, err := exec.Command(binary, "audit", "query", "--redis", rdb.Addr, "--type", "authn.failure").CombinedOutput()
		if err != nil {
			t.Fatalf("audit query: %v\n%s", err, out)
		}
		per := map[string]int{}
		for line := range strings.SplitSeq(string(out), "\n") {
			if strings.Contains(line, `"reason":"auth_rate_limited"`) && strings.Contains(line, `"client_ip":"`+attacker+`"`) {
				_, after, _ := strings.Cut(line, `"replica":"`)
				replica, _, _ := strings.Cut(after, `"`)
				per[replica]++
			}
		}
		return per, string(out)
	}
	testenv.WaitUntil(t, "every replica's refusal event in Redis", 10*time.Second, func() bool { per, _ := count(); return len(per) == len(reps) })
	if per, out := count(); len(per) != len(reps) || per["lim-0"] != 1 || per["lim-1"] != 1 || per["lim-2"] != 1 {
		t.Errorf("auth_rate_limited events per replica: %v, want one each\n%s", per, out)
	}
}
