package policies

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func measure(t *testing.T, name, src string) {
	ctx := context.Background()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(src), 0o644)
	e := newTestEngine(t, Config{Dir: dir, Timeout: time.Second}, nil)
	if err := e.SetGateways(ctx, benchGateways(10000)); err != nil {
		t.Fatal(err)
	}
	ins := benchInputs(10000)
	in := &ins[10]
	d, err := e.Decide(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	n := testing.AllocsPerRun(2000, func() { e.Decide(ctx, in) })
	start := time.Now()
	for j := 0; j < 20000; j++ {
		e.Decide(ctx, in)
	}
	t.Logf("%-12s %v allocs %.0f, %v/op", name, d.Reason, n, time.Since(start)/20000)
}

func TestDbgMicro(t *testing.T) {
	pre := "package moltgate.authz\n"
	measure(t, "trivial", pre+`decision := {"allow": true, "reason": "x"}`)
	measure(t, "lookup", pre+`decision := {"allow": true, "reason": "x"} if { gw := data.gateways[input.gateway.id] }`)
	measure(t, "owner", pre+`decision := {"allow": true, "reason": "x"} if { gw := data.gateways[input.gateway.id]; gw.owner == input.subject.id }`)
	measure(t, "owner=", pre+`decision := {"allow": true, "reason": "x"} if { gw := data.gateways[input.gateway.id]; gw.owner = input.subject.id }`)
	measure(t, "inline4", pre+`decision := {"allow": true, "reason": "x"} if { gw := data.gateways[input.gateway.id]; gw.owner == input.subject.id; input.subject.kind == "user"; count(gw.allowlist) == 0; input.action != "tools.invoke" }`)
	measure(t, "rules4", pre+`decision := {"allow": true, "reason": "x"} if { is_owner; is_user; open; not_tool }
gw := data.gateways[input.gateway.id]
is_owner if gw.owner == input.subject.id
is_user if input.subject.kind == "user"
open if count(gw.allowlist) == 0
not_tool if input.action != "tools.invoke"`)
	measure(t, "not1", pre+`decision := {"allow": true, "reason": "x"} if { gw := data.gateways[input.gateway.id]; not gw.foo }`)
	measure(t, "in-set", pre+`decision := {"allow": true, "reason": "x"} if { input.protocol in {"http", "ws"} }`)
	measure(t, "else3", pre+`decision := {"allow": false, "reason": "a"} if { input.subject.kind == "a" } else := {"allow": false, "reason": "b"} if { input.subject.kind == "b" } else := {"allow": true, "reason": "c"}`)
	measure(t, "func", pre+`decision := {"allow": true, "reason": "x"} if { f(data.gateways[input.gateway.id]) }
f(gw) if gw.owner == input.subject.id`)
}
