package deploy

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// promql is Prometheus's own parser, with the functions a Prometheus server accepts by default.
var promql = parser.NewParser(parser.Options{})

// exprProblems parses expr and returns what in it is wrong: a parse error, a metric moltgate
// does not register, a label its metric does not have, or a grouping by a label none of the
// metrics under it has. Every series also has the labels Prometheus adds at scrape (instance,
// job); a histogram's _bucket series has le. known maps each metric name to its family;
// recorded names (from recording rules) have nil labels and are not checked for labels.
func exprProblems(expr string, known map[string]metric) []error {
	e, err := promql.ParseExpr(expr)
	if err != nil {
		return []error{err}
	}
	var errs []error
	// labelsUnder is every label the series selected under n can have; nil: any.
	labelsUnder := func(n parser.Node) map[string]bool {
		out := map[string]bool{"instance": true, "job": true}
		unchecked := false
		parser.Inspect(n, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok {
				labels, ok := seriesLabels(vs.Name, known)
				if ok && labels == nil {
					unchecked = true
				}
				for l := range labels {
					out[l] = true
				}
			}
			return nil
		})
		if unchecked {
			return nil
		}
		return out
	}
	checkLabels := func(what string, names []string, have map[string]bool) {
		for _, l := range names {
			if have != nil && !have[l] {
				errs = append(errs, fmt.Errorf("%s %q, which none of the metrics under it has", what, l))
			}
		}
	}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			labels, ok := seriesLabels(n.Name, known)
			if !ok {
				errs = append(errs, fmt.Errorf("%q is not a metric moltgate registers", n.Name))
				return nil
			}
			for _, m := range n.LabelMatchers {
				if m.Name == model.MetricNameLabel {
					continue
				}
				if labels != nil && !labels[m.Name] {
					errs = append(errs, fmt.Errorf("%s has no label %q", n.Name, m.Name))
				}
			}
		case *parser.AggregateExpr:
			checkLabels(n.Op.String()+" by", n.Grouping, labelsUnder(n.Expr))
		case *parser.BinaryExpr:
			if n.VectorMatching != nil {
				checkLabels("matches on", n.VectorMatching.MatchingLabels, labelsUnder(n))
			}
		}
		return nil
	})
	return errs
}

// seriesLabels returns the labels of the series named name, and whether moltgate has it;
// nil labels: a recorded series, whose labels are not checked.
func seriesLabels(name string, known map[string]metric) (map[string]bool, bool) {
	m, ok := known[name]
	suffix := ""
	if !ok {
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			if base, cut := strings.CutSuffix(name, s); cut && known[base].histogram {
				m, ok, suffix = known[base], true, s
			}
		}
	}
	if !ok || m.labels == nil {
		return nil, ok
	}
	labels := map[string]bool{"instance": true, "job": true}
	for l := range m.labels {
		labels[l] = true
	}
	if suffix == "_bucket" {
		labels["le"] = true
	}
	return labels, true
}

// ruleFiles parses every rule file in deploy/prometheus with Prometheus's own rule loader
// (strict: unknown fields are errors; every expression and template is checked).
func ruleFiles(t *testing.T) map[string]*rulefmt.RuleGroups {
	t.Helper()
	paths, _ := filepath.Glob("prometheus/*.yml")
	out := map[string]*rulefmt.RuleGroups{}
	for _, path := range paths {
		if filepath.Base(path) == "prometheus.yml" {
			continue
		}
		groups, errs := rulefmt.ParseFile(path, false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
		for _, err := range errs {
			t.Errorf("%s: %v", path, err)
		}
		out[path] = groups
	}
	if len(out) < 3 {
		t.Fatalf("rule files %v: want the audit and proxy alerts and the recording rules", paths)
	}
	return out
}

// knownMetrics is what the code registers, plus the series the recording rules make.
func knownMetrics(t *testing.T) map[string]metric {
	t.Helper()
	code, err := registeredMetrics()
	if err != nil {
		t.Fatalf("building moltgate's packages to read their metrics: %v", err)
	}
	if len(code) < 30 {
		t.Fatalf("%d metrics registered: want every package's", len(code))
	}
	known := map[string]metric{}
	for n, m := range code {
		known[n] = m
	}
	for _, groups := range ruleFiles(t) {
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				if r.Record != "" {
					known[r.Record] = metric{}
				}
			}
		}
	}
	return known
}

// Every alert and recording rule parses with Prometheus's rule loader and names only metrics
// and labels moltgate registers.
func TestRulesNameRegisteredMetrics(t *testing.T) {
	t.Parallel()
	known := knownMetrics(t)
	rules := 0
	for path, groups := range ruleFiles(t) {
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				rules++
				for _, err := range exprProblems(r.Expr, known) {
					t.Errorf("%s: %s%s: %v", path, r.Alert, r.Record, err)
				}
				if r.Record != "" && !strings.HasPrefix(r.Record, "moltgate:") {
					t.Errorf("%s: recording rule %s: want the level:metric:operations form, level moltgate", path, r.Record)
				}
			}
		}
	}
	if rules < 15 {
		t.Errorf("%d rules: want every file's", rules)
	}
}

// grafanaVar is a Grafana variable as it stands in an expression: ${name} or $name.
var grafanaVar = regexp.MustCompile(`\$\{?(\w+)\}?`)

// grafanaExpr is expr with the dashboard's variables replaced as Grafana would: intervals by a
// duration, the replica selector by a regular expression. Any other variable is left, and
// fails to parse.
func grafanaExpr(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		switch grafanaVar.FindStringSubmatch(v)[1] {
		case "__rate_interval", "__interval", "__range":
			return "5m"
		case "instance":
			return ".+"
		}
		return v
	})
}

// dashboard is the part of a Grafana dashboard these checks read.
type dashboard struct {
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

// dashboardProblems returns what is wrong in the dashboard d: every panel but a row queries
// Prometheus through the dashboard's data source variable, with expressions that parse and
// name only metrics moltgate registers; panel ids are unique.
func dashboardProblems(d dashboard, known map[string]metric) []error {
	var errs []error
	ids := map[int]bool{}
	var all []panel
	for _, p := range d.Panels {
		all = append(all, p)
		all = append(all, p.Panels...)
	}
	queries := 0
	for _, p := range all {
		if ids[p.ID] {
			errs = append(errs, fmt.Errorf("panel %q: id %d used twice", p.Title, p.ID))
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Datasource.UID != "${datasource}" {
			errs = append(errs, fmt.Errorf("panel %q: data source %q, want ${datasource}", p.Title, p.Datasource.UID))
		}
		if len(p.Targets) == 0 {
			errs = append(errs, fmt.Errorf("panel %q: no query", p.Title))
		}
		for _, tg := range p.Targets {
			queries++
			for _, err := range exprProblems(grafanaExpr(tg.Expr), known) {
				errs = append(errs, fmt.Errorf("panel %q: %s: %v", p.Title, tg.Expr, err))
			}
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil {
			errs = append(errs, fmt.Errorf("variable %s: %q, want label_values(SELECTOR, LABEL)", v.Name, v.Definition))
			continue
		}
		for _, err := range exprProblems(fmt.Sprintf("count by (%s) (%s)", m[2], m[1]), known) {
			errs = append(errs, fmt.Errorf("variable %s: %v", v.Name, err))
		}
	}
	if queries == 0 {
		errs = append(errs, fmt.Errorf("dashboard %q: no query", d.Title))
	}
	return errs
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	data := readFile(t, "grafana/moltgate.json")
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("grafana/moltgate.json: %v", err)
	}
	return d
}

// Every query of the Grafana dashboard parses with Prometheus's parser and names only metrics
// and labels moltgate registers; the dashboard shows every subsystem's metrics.
func TestDashboardNamesRegisteredMetrics(t *testing.T) {
	t.Parallel()
	known := knownMetrics(t)
	d := readDashboard(t)
	for _, err := range dashboardProblems(d, known) {
		t.Error(err)
	}
	data, _ := os.ReadFile("grafana/moltgate.json")
	for _, prefix := range []string{"moltgate_http_", "moltgate_policy_", "moltgate_ws_", "moltgate_store_",
		"moltgate_audit_spool_", "moltgate_authn_", "moltgate_browser_", "moltgate_provisioner_"} {
		if !strings.Contains(string(data), prefix) {
			t.Errorf("the dashboard shows no %s* metric", prefix)
		}
	}
}

// The checks above refuse what they exist to refuse: each expression here must be.
func TestExprProblemsRefuse(t *testing.T) {
	t.Parallel()
	known := knownMetrics(t)
	for _, expr := range []string{
		`sum(rate(moltgate_http_request_total[5m]))`,                                           // misspelt metric
		`rate(moltgate_http_requests_total{status="5xx"}[5m])`,                                 // label it does not have
		`sum by (tenant) (rate(moltgate_http_requests_total[5m]))`,                             // unbounded label that does not exist
		`histogram_quantile(0.9, sum by (le) (rate(moltgate_policy_errors_total_bucket[5m])))`, // a counter has no buckets
		`moltgate_ws_connections_sum`,                                                          // nor does a gauge
		`sum(rate(moltgate_http_requests_total[5m])`,                                           // does not parse
		`moltgate_audit_spool_bytes / on (sink) moltgate_audit_spool_max_bytes`,                // matching on a label neither has
		`rate(moltgate_store_stuck_operations[5m]) > bool`,                                     // does not parse
		`up`, // not moltgate's
		`nosuchfunction(moltgate_ws_connections)`, // not a PromQL function
	} {
		if errs := exprProblems(expr, known); len(errs) == 0 {
			t.Errorf("%s: no problem found", expr)
		}
	}
	for _, expr := range []string{
		`histogram_quantile(0.99, sum by (instance, le) (rate(moltgate_http_request_duration_seconds_bucket{route="gateway"}[5m])))`,
		`moltgate:http_requests:rate5m{decision="deny"}`,
		`sum without (instance) (moltgate_ws_connections)`,
	} {
		if errs := exprProblems(expr, known); len(errs) > 0 {
			t.Errorf("%s: %v, want none", expr, errs)
		}
	}

	good := readDashboard(t)
	mutations := map[string]func(d *dashboard){
		"metric misspelt": func(d *dashboard) { d.Panels[1].Targets[0].Expr = "sum(moltgate_ws_conections)" },
		"unknown variable": func(d *dashboard) {
			d.Panels[1].Targets[0].Expr = `sum(rate(moltgate_http_requests_total[$window]))`
		},
		"fixed data source": func(d *dashboard) { d.Panels[1].Datasource.UID = "prometheus-prod" },
		"no query":          func(d *dashboard) { d.Panels[1].Targets = nil },
		"duplicate id":      func(d *dashboard) { d.Panels[2].ID = d.Panels[1].ID },
		"variable on a metric that does not exist": func(d *dashboard) {
			d.Templating.List[1].Definition = "label_values(moltgate_requests_total, instance)"
		},
	}
	for name, mutate := range mutations {
		t.Run(name, func(t *testing.T) {
			d := good
			d.Panels = slices.Clone(good.Panels)
			d.Panels[1].Targets = slices.Clone(good.Panels[1].Targets)
			d.Templating.List = slices.Clone(good.Templating.List)
			mutate(&d)
			if len(dashboardProblems(d, known)) == 0 {
				t.Error("no problem found")
			}
		})
	}
}
