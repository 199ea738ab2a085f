package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// ruleFile is a Prometheus rule file, decoded strictly.
type ruleFile struct {
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

func decodeStrict(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// The alert rules in deploy/prometheus are well formed and ask only about metrics and
// labels moltgate exports (a misspelt name or label would match nothing, silently).
func TestAlertRulesNameExportedMetricsAndLabels(t *testing.T) {
	files, _ := filepath.Glob("../../deploy/prometheus/*-alerts.yml")
	if len(files) < 2 {
		t.Fatalf("rule files %v, want the audit and the proxy rules", files)
	}
	inCode, documented := codeMetrics(t), readmeMetrics(t)
	metric := regexp.MustCompile(`\bmoltgate_[a-z0-9_]+`)
	selector := regexp.MustCompile(`(moltgate_[a-z0-9_]+)\{([^}]*)\}`)
	matcher := regexp.MustCompile(`([a-z_]+)\s*(=~|!~|!=|=)`)
	grouping := regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	base := func(m string) string {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(m, suffix); ok && inCode[b] {
				return b
			}
		}
		return m
	}
	seen := map[string]bool{}
	for _, path := range files {
		var f ruleFile
		decodeStrict(t, path, &f)
		if len(f.Groups) == 0 {
			t.Fatalf("%s: no rule groups", path)
		}
		for _, g := range f.Groups {
			for _, r := range g.Rules {
				if r.Alert == "" || seen[r.Alert] {
					t.Errorf("%s: alert %q: want a unique name", path, r.Alert)
				}
				seen[r.Alert] = true
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
				}
				if s := r.Labels["severity"]; s != "warning" && s != "critical" {
					t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
				}
				if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
					t.Errorf("%s: want summary and description annotations", r.Alert)
				}
				for _, pair := range [][2]string{{"(", ")"}, {"[", "]"}, {"{", "}"}} {
					if strings.Count(r.Expr, pair[0]) != strings.Count(r.Expr, pair[1]) {
						t.Errorf("%s: unbalanced %s%s in %q", r.Alert, pair[0], pair[1], r.Expr)
					}
				}
				labels := map[string]bool{"instance": true, "job": true}
				for _, m := range metric.FindAllString(r.Expr, -1) {
					b := base(m)
					if !inCode[b] {
						t.Errorf("%s: %s is not a moltgate metric", r.Alert, m)
					}
					for l := range documented[b] {
						labels[l] = true
					}
					if b != m {
						labels["le"] = true
					}
				}
				for _, s := range selector.FindAllStringSubmatch(r.Expr, -1) {
					for _, l := range matcher.FindAllStringSubmatch(s[2], -1) {
						if b := base(s[1]); !documented[b][l[1]] && !(l[1] == "le" && b != s[1]) {
							t.Errorf("%s: %s has no label %q (README: %v)", r.Alert, s[1], l[1], documented[b])
						}
					}
				}
				for _, g := range grouping.FindAllStringSubmatch(r.Expr, -1) {
					for _, l := range strings.Split(g[1], ",") {
						if l = strings.TrimSpace(l); l != "" && !labels[l] {
							t.Errorf("%s: groups by %q, which none of its metrics has", r.Alert, l)
						}
					}
				}
			}
		}
	}
	// The request path's failures that matter to operators are alerted on.
	for _, alert := range []string{"MoltgatePolicyErrors", "MoltgateJWKSUnavailable", "MoltgateAuditSpoolFull"} {
		if !seen[alert] {
			t.Errorf("no alert %s", alert)
		}
	}
}

// deploy/prometheus/prometheus.yml scrapes /metrics and loads every rule file beside it.
func TestPrometheusConfigLoadsTheRules(t *testing.T) {
	var cfg struct {
		Global        map[string]string `yaml:"global"`
		RuleFiles     []string          `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	decodeStrict(t, "../../deploy/prometheus/prometheus.yml", &cfg)
	files, _ := filepath.Glob("../../deploy/prometheus/*-alerts.yml")
	for _, f := range files {
		if !slices.Contains(cfg.RuleFiles, filepath.Base(f)) {
			t.Errorf("rule_files %v leave out %s", cfg.RuleFiles, filepath.Base(f))
		}
	}
	if len(cfg.ScrapeConfigs) != 1 || cfg.ScrapeConfigs[0].MetricsPath != "/metrics" ||
		len(cfg.ScrapeConfigs[0].StaticConfigs) == 0 || len(cfg.ScrapeConfigs[0].StaticConfigs[0].Targets) == 0 {
		t.Fatalf("scrape_configs %+v: want one job scraping /metrics", cfg.ScrapeConfigs)
	}
}
