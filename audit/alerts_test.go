package audit

import (
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"
)

// The alert rules in deploy/ name only metrics this package exports, and fire on sink lag
// and spool growth as issue 5 asks.
func TestAlertRulesUseExportedMetrics(t *testing.T) {
	data, err := os.ReadFile("../deploy/prometheus/moltgate-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		t.Fatalf("moltgate-alerts.yml: %v", err)
	}

	exported := exportedMetrics(t)
	name := regexp.MustCompile(`\bmoltgate_[a-z0-9_]+`)
	used := map[string][]string{} // metric → alerts using it
	alerts := map[string]bool{}
	for _, g := range file.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Fatalf("group %q: want a name and rules", g.Name)
		}
		for _, r := range g.Rules {
			if r.Alert == "" || alerts[r.Alert] {
				t.Fatalf("rule %q: want a unique alert name", r.Alert)
			}
			alerts[r.Alert] = true
			if _, err := time.ParseDuration(r.For); err != nil {
				t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: want summary and description annotations", r.Alert)
			}
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") || strings.Count(r.Expr, "[") != strings.Count(r.Expr, "]") {
				t.Errorf("%s: unbalanced brackets in %q", r.Alert, r.Expr)
			}
			metrics := name.FindAllString(r.Expr, -1)
			if len(metrics) == 0 {
				t.Errorf("%s: expression names no moltgate metric", r.Alert)
			}
			for _, m := range metrics {
				if !exported[m] {
					t.Errorf("%s: metric %s is not exported by the audit package (exported: %v)", r.Alert, m, slices.Sorted(maps.Keys(exported)))
				}
				used[m] = append(used[m], r.Alert)
			}
		}
	}
	for _, m := range []string{"moltgate_audit_sink_lag_events", "moltgate_audit_spool_bytes", "moltgate_audit_spool_full"} {
		if len(used[m]) == 0 {
			t.Errorf("no alert rule on %s", m)
		}
	}
}

// exportedMetrics registers the spool's and the archive's metrics and returns their names.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	am, err := newArchiveMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	// Vectors are gathered once they have a series.
	m.events.WithLabelValues(TypePolicyDeny)
	m.sinkLag.WithLabelValues("redis")
	m.sinkErrors.WithLabelValues("redis")
	am.archived.WithLabelValues("redis")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, mf := range mfs {
		out[mf.GetName()] = true
	}
	return out
}
