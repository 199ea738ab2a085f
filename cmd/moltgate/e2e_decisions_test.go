package main_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/proxy/admin"
)

// Issue 12, through `moltgate serve`: every response names its decision, a refusal's audit
// event carries that id, allows are sampled into the audit stream as policy.decision events
// at policies.decision_log.allow_sample_rate (1 and 0 here), and no credential the client
// sent (its bearer token, a cookie, a token in the path) reaches an audit file.
func TestDecisionRecordsThroughServe(t *testing.T) {
	const (
		token      = "d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1"
		cookie     = "c0ffee-cookie-secret-5c0ffee5c0ffee5c0ffee5c0ffee"
		pathSecret = "eeee1111eeee1111eeee1111eeee1111eeee1111eeee1111eeee1111eeee1111"
	)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(up.Close)
	for _, tt := range []struct {
		rate     string
		sampled  bool
		countKey string
	}{
		{"1", true, `moltgate_policy_decision_log_allows_total{result="logged"}`},
		{"0", false, `moltgate_policy_decision_log_allows_total{result="sampled_out"}`},
	} {
		t.Run("rate "+tt.rate, func(t *testing.T) {
			mg := startMoltgate(t, `
listen: @LISTEN@
admin_listen: @ADMIN@
data_dir: @DATA@
admin_token: {file: @ADMINTOKEN@}
policies: {decision_log: {allow_sample_rate: `+tt.rate+`}}
`)
			if _, err := mg.admin().Create(t.Context(), admin.CreateRequest{ID: "gwd", Tenant: "tenant-d", Owner: "user_d", Upstream: up.URL, Token: token}); err != nil {
				t.Fatal(err)
			}
			get := func(path string, header ...string) (int, string, string) {
				req, _ := http.NewRequestWithContext(t.Context(), "GET", mg.proxyURL+path, nil)
				req.Host = "gwd.gw.localhost"
				for i := 0; i+1 < len(header); i += 2 {
					req.Header.Set(header[i], header[i+1])
				}
				resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, resp.Header.Get("X-Moltgate-Decision-Id"), string(b)
			}
			status, allowID, _ := get("/", "Authorization", "Bearer "+token, "Cookie", "other="+cookie)
			if status != 200 || len(allowID) != 32 {
				t.Fatalf("the token's read: %d, decision id %q; want 200 with an id", status, allowID)
			}
			status, secretPathID, _ := get("/files/"+pathSecret, "Authorization", "Bearer "+token)
			if status != 200 || len(secretPathID) != 32 {
				t.Fatalf("a read of a token-like path: %d, %q", status, secretPathID)
			}
			status, denyID, body := get("/", "Cookie", "other="+cookie)
			if status != 401 || len(denyID) != 32 || !strings.Contains(body, `"decision_id":"`+denyID+`"`) {
				t.Fatalf("anonymous: %d %q %s; want 401 naming its decision", status, denyID, body)
			}

			var byID map[string]audit.Event
			waitUntil(t, "the refusal on record", func() bool {
				byID = map[string]audit.Event{}
				for _, e := range mg.events(t) {
					if e.Decision != nil {
						byID[e.Decision.DecisionID] = e
					}
				}
				_, ok := byID[denyID]
				return ok
			})
			if e := byID[denyID]; e.Type != audit.TypePolicyDeny || e.Reason != "unauthenticated" || e.PolicyRevision == "" {
				t.Errorf("the refusal's event: %+v", e)
			}
			e, logged := byID[allowID]
			if logged != tt.sampled {
				t.Fatalf("allow logged: got %v, want %v", logged, tt.sampled)
			}
			if tt.sampled {
				if e.Type != audit.TypePolicyDecision || e.Actor.Kind != "gateway_token" || !e.Decision.Result.Allow || e.Decision.Labels["revision"] == "" {
					t.Errorf("the allow's event: %+v %+v", e, e.Decision)
				}
				if erased := byID[secretPathID].Decision; erased == nil || strings.Join(erased.Erased, ",") != "/input/request/path,/input/request/route" {
					t.Errorf("the token-like path's event erased %v, want the path and route", erased)
				}
			}
			if v := metricValue(t, mg, tt.countKey); v == "?" || v == "0" {
				t.Errorf("%s: %s, want a count", tt.countKey, v)
			}
			files, _ := filepath.Glob(filepath.Join(mg.dataDir, "audit", "*"))
			for _, f := range files {
				raw, _ := os.ReadFile(f)
				for _, secret := range []string{token, cookie, pathSecret} {
					if bytes.Contains(raw, []byte(secret)) {
						t.Errorf("%s holds a credential the client sent (%.8s...)", f, secret)
					}
				}
			}
		})
	}
}

// refusalDecisionID is the decision id in a refusal's body.
var refusalDecisionID = regexp.MustCompile(`,"decision_id":"[0-9a-f]{32}"`)
