package audit

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Issue 16: the README's event schema and the events agree. The README's type table gives
// each type's outcomes; the code's schema gives the same, type by type, and the outcome
// field's row names every outcome any type takes.
func TestREADMEEventSchemaMatchesCode(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(readme)
	start := strings.Index(section, "### Event schema")
	if start < 0 {
		t.Fatal("README: no Event schema section")
	}
	section = section[start:]
	if end := strings.Index(section[4:], "\n### "); end >= 0 {
		section = section[:end+4]
	}
	quoted := regexp.MustCompile("`([^`]*)`")
	inREADME := map[string][]string{}
	var outcomeRow []string
	for line := range strings.SplitSeq(section, "\n") {
		cols := strings.Split(line, "|")
		if len(cols) < 4 {
			continue
		}
		first := quoted.FindStringSubmatch(cols[1])
		if first == nil {
			continue
		}
		var values []string
		text, _, _ := strings.Cut(cols[2], ":") // the values; a comment may follow a colon
		for _, m := range quoted.FindAllStringSubmatch(text, -1) {
			values = append(values, m[1])
		}
		switch {
		case first[1] == "outcome":
			outcomeRow = values
		case typeOutcomes[first[1]] != nil || strings.Contains(first[1], "."):
			inREADME[first[1]] = values
		}
	}
	var all []string
	for typ, want := range typeOutcomes {
		got, ok := inREADME[typ]
		if !ok {
			t.Errorf("README: type %s missing from the event table", typ)
			continue
		}
		slices.Sort(got)
		want = slices.Sorted(slices.Values(want))
		if !slices.Equal(got, want) {
			t.Errorf("README: %s: outcomes %v, the code's schema %v", typ, got, want)
		}
		all = append(all, want...)
	}
	for typ := range inREADME {
		if typeOutcomes[typ] == nil {
			t.Errorf("README lists type %s, which the code's schema does not", typ)
		}
	}
	slices.Sort(all)
	all = slices.Compact(all)
	slices.Sort(outcomeRow)
	if !slices.Equal(outcomeRow, all) {
		t.Errorf("README: the outcome row names %v, want every outcome the types take: %v", outcomeRow, all)
	}
}

// CheckSchema takes each type with each outcome the schema gives it, as Emit writes it, and
// names what is wrong with an event that departs from it.
func TestCheckSchema(t *testing.T) {
	l := openTest(t, t.TempDir(), 0)
	for typ, outcomes := range typeOutcomes {
		for _, o := range outcomes {
			e := Event{Type: typ, Actor: Actor{Kind: "user", ID: "u"}, Outcome: o}
			if err := l.Emit(t.Context(), e); err != nil {
				t.Fatal(err)
			}
		}
	}
	var n int
	if err := l.Query(Query{}, func(e Event) bool {
		n++
		if err := CheckSchema(e); err != nil {
			t.Errorf("%s %s as written: %v", e.Type, e.Outcome, err)
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no events read back")
	}

	var written Event
	_ = l.Query(Query{Type: TypeAdminRequest}, func(e Event) bool { written = e; return false })
	tests := []struct {
		name   string
		change func(e *Event)
		want   string
	}{
		{"admin.request with success", func(e *Event) { e.Outcome = OutcomeSuccess }, `admin.request: outcome "success": want allow`},
		{"unknown type", func(e *Event) { e.Type = "admin.requests" }, `type "admin.requests": not an event type`},
		{"no actor kind", func(e *Event) { e.Actor = Actor{} }, `actor kind "": want one of`},
		{"not sealed", func(e *Event) { e.Hash = "" }, "not set as Emit sets them"},
		{"decision fields on a non-decision event", func(e *Event) { e.Decision = decisionFor(e) }, "decision fields present: true, want false"},
		{"old schema", func(e *Event) { e.Schema = 1 }, "schema 1: want 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := written
			tt.change(&e)
			err := CheckSchema(e)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
