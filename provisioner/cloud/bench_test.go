package cloud_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/moltgate/moltgate/provisioner"
	"github.com/moltgate/moltgate/provisioner/flytest"
	"github.com/moltgate/moltgate/provisioner/provisionertest"
)

// BenchmarkProvisionFly provisions fly gateways through the whole plan (tunnel, app, volume,
// IPs, secrets, machine, DNS, Access, register) against the fakes, every Fly and Cloudflare
// call taking 100–800 ms as on the real APIs, with the Cloudflare driver's default
// client-side rate limit (1,100 requests per 5 minutes, burst 100). Baseline: one gateway
// alone. Then 32 gateways at once through Run with 16 workers. Issue 14's speed figure.
// Run: go test -run '^$' -bench ProvisionFly -benchtime 1x ./provisioner/cloud/
func BenchmarkProvisionFly(b *testing.B) {
	const gateways, workers = 32, 16
	for b.Loop() {
		e := newEnv(b, flytest.UniformLatency(100*time.Millisecond, 800*time.Millisecond, 1))
		e.cfRateLimit = true
		e.timeout = 30 * time.Second
		p, _ := e.process(func(c *provisioner.Config, _ *provisioner.Deps) { c.Workers = workers })

		start := time.Now()
		provisionertest.Provisioned(b, p, spec("alone"))
		alone := time.Since(start)

		ctx, cancel := context.WithCancel(b.Context())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		start = time.Now()
		for i := range gateways {
			if _, _, err := p.Apply(b.Context(), spec(fmt.Sprintf("gw%d", i))); err != nil {
				b.Fatal(err)
			}
		}
		for i := 0; i < gateways; {
			if st, _ := p.Get(fmt.Sprintf("gw%d", i)); st.Phase == provisioner.PhaseReady {
				i++
				continue
			}
			time.Sleep(100 * time.Millisecond)
		}
		all := time.Since(start)
		cancel()
		<-done
		if got := e.fly.Counts().Machines; got != gateways+1 {
			b.Fatalf("machines: got %d, want %d", got, gateways+1)
		}
		serial := time.Minute.Seconds() / alone.Seconds()
		parallel := gateways / all.Minutes()
		b.ReportMetric(parallel, "gateways/min")
		fmt.Printf("bench provision_fly_seconds_per_gateway_alone %.1f (whole plan, every call 100-800 ms; baseline)\n", alone.Seconds())
		fmt.Printf("bench provision_fly_gateways_per_min %.1f (%d at once, %d workers; %d Cloudflare calls)\n",
			parallel, gateways, workers, e.cf.TotalCalls())
		fmt.Printf("bench provision_fly_vs_one_at_a_time %.1f (%.1f gateways/min one at a time)\n", parallel/serial, serial)
	}
}
