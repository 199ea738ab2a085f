package policies

import (
	"context"
	"testing"
	"time"
	"slices"
)

func TestDbgMax(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t, Config{Timeout: 10 * time.Second}, nil)
	if err := e.SetGateways(ctx, benchGateways(10000)); err != nil {
		t.Fatal(err)
	}
	ins := benchInputs(10000)
	var ds []time.Duration
	for i := 0; i < 300000; i++ {
		s := time.Now()
		if _, err := e.Decide(ctx, &ins[i%len(ins)]); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, time.Since(s))
	}
	slices.Sort(ds)
	t.Logf("p50 %v p99 %v p999 %v max %v", ds[len(ds)/2], ds[len(ds)*99/100], ds[len(ds)*999/1000], ds[len(ds)-1])
}
