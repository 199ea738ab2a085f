package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/proxy/admin"
)

// BenchmarkLocalCreate is the local driver's figure of issue 14: the time from `gateway
// create` to the first request proxied to the new gateway, as the command measures it (it
// returns once GET /readyz through moltgate's proxy listener, with the gateway's token,
// answers 200), against the time the real OpenClaw takes to start and answer (the
// local.process and local.ready steps), the part moltgate does not own.
// Run: go test -run '^$' -bench '^BenchmarkLocalCreate$' -benchtime 1x ./cmd/moltgate/
func BenchmarkLocalCreate(b *testing.B) {
	oc := filepath.Join(testenv.OpenClawDir(b), "node_modules", ".bin", "openclaw")
	for b.Loop() {
		dir := b.TempDir()
		_, adminListen, _, logs := startBenchServe(b, dir, filepath.Join(dir, "data"),
			fmt.Sprintf("provisioner:\n  local: {openclaw_bin: %s}\n", oc))
		cli := func(args ...string) []byte {
			cmd := exec.Command(binary, append(args[:2:2], append([]string{"--admin-url", "http://" + adminListen}, args[2:]...)...)...)
			cmd.Env = append(os.Environ(), "MOLTGATE_ADMIN_TOKEN="+benchAdminToken)
			out, err := cmd.CombinedOutput()
			if err != nil {
				b.Fatalf("moltgate %v: %v\n%s\n%s", args, err, out, logs)
			}
			return out
		}
		start := time.Now()
		cli("gateway", "create", "--id", "bench", "--tenant", "acme", "--owner", "user_bench")
		total := time.Since(start)
		var p admin.Provision
		if err := json.Unmarshal(cli("gateway", "status", "--json", "bench"), &p); err != nil {
			b.Fatal(err)
		}
		var openclaw time.Duration
		for _, s := range p.Steps {
			if s.Name == "local.process" || s.Name == "local.ready" {
				openclaw += s.Finished.Sub(s.Started)
			}
		}
		b.ReportMetric(total.Seconds(), "s/create")
		fmt.Printf("bench local_create_to_first_proxied_request_s %.1f (gateway create until /readyz answers through moltgate)\n", total.Seconds())
		fmt.Printf("bench local_openclaw_start_s %.1f (local.process + local.ready: OpenClaw starting; baseline)\n", openclaw.Seconds())
		fmt.Printf("bench local_create_overhead_s %.1f (the rest: moltgate's steps, the CLI's polling)\n", (total - openclaw).Seconds())
	}
}
