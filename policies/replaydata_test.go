package policies

import (
	"os"
	"path/filepath"
	"testing"
)

// Issue 12: replay records carry data.tenant_keys as they were, and each record is decided
// with its own: a key one record had is not seen by the next.
func TestReplayTenantKeys(t *testing.T) {
	dir := t.TempDir()
	example := filepath.Join("..", "deploy", "policy-examples", "tenant-keys")
	names, err := filepath.Glob(filepath.Join(example, "*.rego"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range names {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(p)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	replay := filepath.Join(dir, filepath.FromSlash(ReplayDir))
	if err := os.MkdirAll(replay, 0o700); err != nil {
		t.Fatal(err)
	}
	const (
		input = `"input": {"protocol": "http", "action": "tools.invoke", "subject": {"kind": "user", "id": "u_owner"}, "gateway": {"id": "gw1", "tenant": "t1"}}`
		gws   = `"gateways": [{"id": "gw1", "tenant": "t1", "owner": "u_owner", "auth_mode": "token"}]`
	)
	records := `{"decision_id": "capped", ` + input + `, "result": {"allow": true, "reason": "ok"}, "data": {` + gws +
		`, "tenant_keys": {"t1": {"anthropic": {"id": "k1", "provider": "anthropic", "kind": "provider_key", "monthly_spend_cap_cents": 5000}}}}}` + "\n" +
		`{"decision_id": "keyless", ` + input + `, "result": {"allow": false, "reason": "no_capped_key", "status": 403}, "data": {` + gws + `}}` + "\n"
	if err := os.WriteFile(filepath.Join(replay, "keys.jsonl"), []byte(records), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := Replay(t.Context(), dir)
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	if len(rep.Results) != 2 {
		t.Fatalf("replayed %d records, want 2", len(rep.Results))
	}
	for _, r := range rep.Results {
		if r.Changed || r.Err != "" {
			t.Errorf("%s: recorded %+v, now %+v (%s); want unchanged", r.Name, r.Recorded, r.Now, r.Err)
		}
	}
}
