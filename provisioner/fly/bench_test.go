package fly_test

import (
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner/fly"
	"github.com/moltgate/moltgate/provisioner/flytest"
)

// BenchmarkProvision provisions gateways on Fly against the fake with each API call taking
// 100–800 ms, as on the real API (issue 14's speed figure), 16 at a time, and reports
// gateways per minute. Run: go test -run '^$' -bench Provision -benchtime 2x ./provisioner/fly/
func BenchmarkProvision(b *testing.B) {
	const parallel = 16
	fake, err := flytest.New(flytest.Config{
		Org:     testOrg,
		Latency: flytest.UniformLatency(100*time.Millisecond, 800*time.Millisecond, 1),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer fake.Close()
	d, err := fly.New(fly.Config{Org: testOrg, Region: "ams", Token: keystore.Secret(testToken), BaseURL: fake.URL}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	e := &env{fake: fake, d: d}
	n := 0
	start := time.Now()
	for b.Loop() {
		var wg sync.WaitGroup
		errs := make(chan error, parallel)
		for range parallel {
			n++
			id := fmt.Sprintf("bench-%d", n)
			wg.Go(func() {
				if _, err := e.ensureAll(b.Context(), id, imageA); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/time.Since(start).Minutes(), "gateways/min")
	if got := fake.Counts().Machines; got != n {
		b.Fatalf("machines: got %d, want %d", got, n)
	}
}
