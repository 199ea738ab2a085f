package policies

import (
	"context"
	"testing"
	"time"
)

func BenchmarkDbgOwner(b *testing.B) {
	ctx := context.Background()
	e := newTestEngine(b, Config{Timeout: time.Second}, nil)
	if err := e.SetGateways(ctx, benchGateways(10000)); err != nil {
		b.Fatal(err)
	}
	ins := benchInputs(10000)
	in := &ins[10]
	b.ReportAllocs()
	for b.Loop() {
		e.Decide(ctx, in)
	}
}
