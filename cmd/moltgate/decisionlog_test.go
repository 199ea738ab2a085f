package main

import (
	"strings"
	"testing"
)

// Issue 12: policies.decision_log.allow_sample_rate defaults to 0.01, takes 0 (no allows)
// to 1 (every allow), and anything else is refused naming the key.
func TestDecisionLogConfig(t *testing.T) {
	for _, tt := range []struct {
		text string
		want float64
		err  string
	}{
		{"listen: 127.0.0.1:1\n", 0.01, ""},
		{"policies: {decision_log: {allow_sample_rate: 0}}\n", 0, ""},
		{"policies: {decision_log: {allow_sample_rate: 1}}\n", 1, ""},
		{"policies: {decision_log: {allow_sample_rate: 1.5}}\n", 0, "policies.decision_log.allow_sample_rate: 1.5: want 0 to 1"},
		{"policies: {decision_log: {allow_sample_rate: -0.5}}\n", 0, "policies.decision_log.allow_sample_rate: -0.5: want 0 to 1"},
		{"policies: {decision_log: {allow_sample_rat: 1}}\n", 0, "allow_sample_rat"},
	} {
		cfg, err := loadConfig(writeConfig(t, tt.text), noEnv)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: got %v, want an error naming %q", tt.text, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tt.text, err)
		}
		l, err := cfg.Policies.DecisionLog.open(nil, nil, nil, nil)
		if err == nil || l != nil {
			t.Fatal("a decision log without an engine: accepted")
		}
		if got := cfg.Policies.DecisionLog.rate(); got != tt.want {
			t.Errorf("%q: rate %v, want %v", tt.text, got, tt.want)
		}
	}
}
