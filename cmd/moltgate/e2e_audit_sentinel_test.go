package main_test

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy/admin"
)

// verifyReport runs `moltgate audit verify` with args and returns its one report line
// ("<name>: ok: N events (seq F-L), …"), failing the test if the chain does not verify.
func verifyReport(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(binary, append([]string{"audit", "verify"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("audit verify %v: %v\n%s", args, err, out)
	}
	_, report, _ := strings.Cut(strings.TrimSpace(string(out)), ": ok: ")
	return report
}

// TestAuditStreamAcrossSentinelFailover (issue 11): with audit.redis.sentinel, the audit
// stream follows the master as the store does. A `moltgate serve` audits admin writes while its
// Redis master is SIGKILLed and the sentinel promotes the replica Redis: every event of its
// chain, those written before, during and after the failover, reaches the stream on the new
// master, which `audit verify` finds unbroken and equal to the spool (first event to last).
func TestAuditStreamAcrossSentinelFailover(t *testing.T) {
	set := testenv.RedisSentinel(t)
	config, _ := replicaConfig(t, sentinelPlaceholder, replicaOptions{})
	sentinel := fmt.Sprintf(`sentinel: {master_name: %s, addresses: ["%s"]`, set.MasterName, set.Addr)
	config = strings.NewReplacer(
		// No replica Redis is left to confirm the store's writes once the master is gone.
		`redis: {address: "`+sentinelPlaceholder+`"}`, `redis: {`+sentinel+`, replicas: -1}}`,
		// The archive worker would take events out of the stream: the stream keeps them all.
		`audit: {redis: {addr: "`+sentinelPlaceholder+`"}}`, `audit: {redis: {`+sentinel+`}}, archive: {disabled: true}}`).Replace(config)
	if strings.Contains(config, sentinelPlaceholder) {
		t.Fatalf("replicaConfig changed: %s left in\n%s", sentinelPlaceholder, config)
	}
	const replica = "aud-0"
	in := startBinary(t, binary, []string{"MOLTGATE_AUDIT_REPLICA=" + replica}, config)

	const id = "gwaudsen"
	token := fmt.Sprintf("%064x", 0xa0d5e)
	if _, err := in.admin().Create(t.Context(), admin.CreateRequest{ID: id, Tenant: "org_audsen", Owner: "user_audsen",
		Upstream: "http://127.0.0.1:9", Token: token}); err != nil {
		t.Fatal(err)
	}
	// Admin writes, each audited (admin.request, then admin.change), until stopped; the
	// number acknowledged so far.
	var acked atomic.Int64
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond) // pacing, within the admin token's budget
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := in.admin().SetMember(t.Context(), id, fmt.Sprintf("user_audsen_%d", i%50), "viewer"); err == nil {
				acked.Add(1)
			}
		}
	}()
	stopWrites := sync.OnceFunc(func() { close(stop); <-done })
	t.Cleanup(stopWrites)
	testenv.WaitUntil(t, "writes acknowledged", 15*time.Second, func() bool { return acked.Load() >= 20 })
	set.Master.Kill()
	testenv.WaitUntil(t, "the replica Redis promoted", 60*time.Second, func() bool {
		addr, err := set.MasterAddr(t.Context())
		return err == nil && addr == set.Replica.Addr
	})
	after := acked.Load()
	testenv.WaitUntil(t, "writes acknowledged again after the failover", 60*time.Second, func() bool { return acked.Load() >= after+20 })
	stopWrites()

	// The spool's chain, from its first event to its last, is the stream's on the new master.
	spool := filepath.Join(in.dataDir, "audit")
	stream := audit.StreamKey(replica)
	var inSpool, inStream string
	testenv.WaitUntil(t, "every spooled event in the new master's stream", 30*time.Second, func() bool {
		inSpool = verifyReport(t, "--files", spool)
		out, err := exec.Command(binary, "audit", "verify", "--redis", set.Replica.Addr, "--stream", stream).CombinedOutput()
		_, inStream, _ = strings.Cut(strings.TrimSpace(string(out)), ": ok: ")
		return err == nil && inStream == inSpool
	})
	var events, first, last int
	if _, err := fmt.Sscanf(inSpool, "%d events (seq %d-%d)", &events, &first, &last); err != nil || first != 1 || events < 80 {
		t.Errorf("spool: %s (%v), want the chain from seq 1 with the 80 events of 40 writes at least", inSpool, err)
	}
	verifyReport(t, "--redis", set.Replica.Addr, "--stream", stream)
	// serve's configuration names the sentinel, not a master: the CLI given it finds the
	// new master as serve did.
	if got := verifyReport(t, "--config", in.configPath, "--stream", stream); got != inStream {
		t.Errorf("audit verify --config: got %s, want the new master's stream: %s", got, inStream)
	}
}
