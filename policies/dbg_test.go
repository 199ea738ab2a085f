package policies

import (
	"context"
	"testing"
	"time"
)

func benchWith(b *testing.B, cfg Config) {
	ctx := context.Background()
	cfg.Timeout = time.Second
	e := newTestEngine(b, cfg, nil)
	if err := e.SetGateways(ctx, benchGateways(10000)); err != nil {
		b.Fatal(err)
	}
	ins := benchInputs(10000)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := e.Decide(ctx, &ins[i%len(ins)]); err != nil {
			b.Fatal(err)
		}
	}
}
func BenchmarkDbgTrivial(b *testing.B) { benchWith(b, Config{Dir: "/tmp/trivial"}) }
func BenchmarkDbgDefault(b *testing.B) { benchWith(b, Config{}) }

func TestDbgAllocs(t *testing.T) {
	ctx := context.Background()
	for _, dir := range []string{"/tmp/trivial", ""} {
		e := newTestEngine(t, Config{Dir: dir, Timeout: time.Second}, nil)
		if err := e.SetGateways(ctx, benchGateways(10000)); err != nil {
			t.Fatal(err)
		}
		ins := benchInputs(10000)
		for i := 0; i < 5; i++ {
			in := &ins[10+i]
			d, _ := e.Decide(ctx, in)
			n := testing.AllocsPerRun(2000, func() { e.Decide(ctx, in) })
			start := time.Now()
			for j := 0; j < 20000; j++ {
				e.Decide(ctx, in)
			}
			t.Logf("dir=%q %s %s: %v allocs %.0f, %v/op", dir, in.Subject.ID, in.Action, d.Reason, n, time.Since(start)/20000)
		}
	}
}

func TestDbgCodec(t *testing.T) {
	c := newCodec()
	ins := benchInputs(10000)
	for i := 0; i < 3; i++ {
		in := &ins[10+i]
		t.Logf("codec allocs %.0f", testing.AllocsPerRun(1000, func() { c.input(in) }))
	}
}
