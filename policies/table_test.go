package policies

import (
	"time"

	"bytes"
	"context"
	"encoding/json"
	"os"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/moltgate/moltgate/registry"
)

// table is testdata/decisions.yaml.
type table struct {
	Gateways       []registry.Gateway `json:"gateways"`
	PlatformAdmins []string           `json:"platform_admins"`
	Cases          []tableCase        `json:"cases"`
}

type tableCase struct {
	Name    string   `json:"name"`
	Input   Input    `json:"input"`
	Actions []string `json:"actions"`
	Want    Decision `json:"want"`
}

// loadTable reads the decision table and expands each case's actions list.
func loadTable(tb testing.TB) table {
	tb.Helper()
	raw, err := os.ReadFile("testdata/decisions.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	// YAML → generic value → JSON → structs, so the json tags of Input and registry.Gateway
	// name the fields, as they do for policies.
	var doc any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		tb.Fatalf("decisions.yaml: %v", err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		tb.Fatalf("decisions.yaml: %v", err)
	}
	var t table
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		tb.Fatalf("decisions.yaml: %v", err)
	}
	var cases []tableCase
	for _, c := range t.Cases {
		if len(c.Actions) == 0 {
			cases = append(cases, c)
			continue
		}
		for _, a := range c.Actions {
			x := c
			x.Name = c.Name + "/" + a
			x.Input.Action = a
			x.Actions = nil
			cases = append(cases, x)
		}
	}
	t.Cases = cases
	return t
}

// newTestEngine builds an engine on a private registry, loaded with the table's data.
func newTestEngine(tb testing.TB, cfg Config, t *table) *Engine {
	tb.Helper()
	ctx := context.Background()
	e, err := New(ctx, cfg, nil, prometheus.NewRegistry())
	if err != nil {
		tb.Fatal(err)
	}
	if t != nil {
		if err := e.SetGateways(ctx, t.Gateways); err != nil {
			tb.Fatal(err)
		}
		if err := e.SetPlatformAdmins(ctx, t.PlatformAdmins); err != nil {
			tb.Fatal(err)
		}
	}
	return e
}

func checkDecision(t *testing.T, got, want Decision) {
	t.Helper()
	if got.Allow != want.Allow {
		t.Errorf("allow: got %v, want %v (decision %+v)", got.Allow, want.Allow, got)
	}
	if want.Reason != "" && got.Reason != want.Reason {
		t.Errorf("reason: got %q, want %q", got.Reason, want.Reason)
	}
	if want.Status != 0 && got.Status != want.Status {
		t.Errorf("status: got %d, want %d", got.Status, want.Status)
	}
	if want.Scopes != nil && !slices.Equal(got.Scopes, want.Scopes) {
		t.Errorf("scopes: got %v, want %v", got.Scopes, want.Scopes)
	}
}

func TestDecisions(t *testing.T) {
	t.Parallel()
	tab := loadTable(t)
	// A generous timeout: this table is about what is decided, and -race on a loaded machine
	// can hold one decision past the default 250 ms.
	e := newTestEngine(t, Config{Timeout: 10 * time.Second}, &tab)
	if len(tab.Cases) < 50 {
		t.Fatalf("decision table: got %d cases, want at least 50", len(tab.Cases))
	}
	for _, c := range tab.Cases {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			got, err := e.Decide(t.Context(), &c.Input)
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			checkDecision(t, got, c.Want)
		})
	}
}

// Generation moves with every change a decision could read, and only then.
func TestGenerationMovesWithEveryChange(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t, Config{}, nil)
	gws := benchGateways(3)
	steps := []struct {
		name string
		do   func() error
	}{
		{"set gateways", func() error { return e.SetGateways(ctx, gws) }},
		{"put gateway", func() error { return e.PutGateway(ctx, gws[0]) }},
		{"delete gateway", func() error { return e.DeleteGateway(ctx, gws[1].ID) }},
		{"platform admins", func() error { return e.SetPlatformAdmins(ctx, []string{"user_root"}) }},
		{"tenant keys", func() error { return e.SetTenantKeys(ctx, gws[0].Tenant, nil) }},
		{"reload", func() error { return e.Reload(ctx) }},
	}
	for _, s := range steps {
		before := e.Generation()
		if _, err := e.Decide(ctx, &benchInputs(3)[0]); err != nil {
			t.Fatal(err)
		}
		if e.Generation() != before {
			t.Fatalf("a decision moved the generation")
		}
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if e.Generation() == before {
			t.Fatalf("%s: generation unchanged", s.name)
		}
	}
}
