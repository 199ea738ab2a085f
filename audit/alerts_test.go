package audit

import (
	"maps"
	"os"
	"regexp"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"
)

// The audit alert rules in deploy/ name only metrics this package exports, and fire on sink
// lag and spool growth as issue 5 asks. (cmd/moltgate checks every rule file's form.)
func TestAlertRulesUseExportedMetrics(t *testing.T) {
	data, err := os.ReadFile("../deploy/prometheus/moltgate-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(data, &file); err != nil {
		t.Fatalf("moltgate-alerts.yml: %v", err)
	}
	exported := exportedMetrics(t)
	name := regexp.MustCompile(`\bmoltgate_[a-z0-9_]+`)
	used := map[string][]string{} // metric → alerts using it
	for _, g := range file.Groups {
		for _, r := range g.Rules {
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
