package policies

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// Issue 12: Evaluate answers the decision Decide would give, with OPA's explanation on
// request, filtered by mode.
func TestEvaluate(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newTestEngine(t, Config{}, nil)
	if err := e.SetGateways(ctx, ownerGateway); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, subject, explain string
		allow                  bool
		reason                 string
		lines                  bool   // an explanation is expected
		contains               string // a line of it contains this
	}{
		{"owner, no explanation", "u_owner", ExplainOff, true, "owner", false, ""},
		{"stranger, full", "u_stranger", ExplainFull, false, "not_a_member", true, "Enter data.moltgate.authz."},
		{"stranger, fails", "u_stranger", ExplainFails, false, "not_a_member", true, "Fail"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := e.Decide(ctx, ownerRead(tt.subject))
			if err != nil {
				t.Fatal(err)
			}
			ev, err := e.Evaluate(ctx, ownerRead(tt.subject), tt.explain)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Allow != tt.allow || ev.Reason != tt.reason || ev.Allow != want.Allow || ev.Reason != want.Reason || ev.Error != "" {
				t.Fatalf("got %+v, want allow %v reason %q", ev, want.Allow, want.Reason)
			}
			if ev.ID == "" || ev.ID == want.ID || ev.Revision != e.Revision() {
				t.Errorf("id %q revision %q: want a new id and revision %q", ev.ID, ev.Revision, e.Revision())
			}
			if got := len(ev.Explanation) > 0; got != tt.lines {
				t.Fatalf("explanation present: got %v, want %v", got, tt.lines)
			}
			if tt.contains != "" && !strings.Contains(strings.Join(ev.Explanation, "\n"), tt.contains) {
				t.Errorf("explanation lacks %q:\n%s", tt.contains, strings.Join(ev.Explanation, "\n"))
			}
		})
	}
	if _, err := e.Evaluate(ctx, ownerRead("u_owner"), "verbose"); err == nil || !strings.Contains(err.Error(), "want one of off, notes, fails, full") {
		t.Errorf("explain verbose: got %v, want an error naming the modes", err)
	}
}

// Issue 12: a policy that fails is reported as the fail-closed decision with the cause.
func TestEvaluatePolicyError(t *testing.T) {
	t.Parallel()
	stale := newTestEngine(t, Config{Fresh: func() error { return ErrStale }}, nil)
	ev, err := stale.Evaluate(t.Context(), ownerRead("u_owner"), ExplainOff)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Allow || ev.Reason != "policy_error" || ev.Status != 503 || !strings.Contains(ev.Error, "stale") || ev.ID == "" {
		t.Errorf("got %+v, want the fail-closed decision with its cause", ev)
	}
}

// Issue 12: DecodeInput reads a policy input strictly and names what is wrong.
func TestDecodeInput(t *testing.T) {
	t.Parallel()
	for _, tt := range decodeInputCases {
		t.Run(tt.name, func(t *testing.T) {
			in, err := DecodeInput(strings.NewReader(tt.body))
			if tt.err == "" {
				if err != nil || in.Subject.ID != "u1" {
					t.Fatalf("got %+v, %v; want the input", in, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("got %v, want an error containing %q", err, tt.err)
			}
		})
	}
	_, err := DecodeInput(strings.NewReader(`{"subject":{"kind":"robot"}}`))
	for _, want := range []string{"protocol", "action: empty", `subject.kind: "robot"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q: every problem is named at once", err, want)
		}
	}
}

// decodeInputCases are DecodeInput's table, and the seeds of FuzzDecodeInput.
var decodeInputCases = []struct{ name, body, err string }{
	{"good", `{"protocol":"http","action":"http.read","subject":{"kind":"user","id":"u1"},"gateway":{"id":"gw1"},"request":{"method":"GET","path":"/","host":"h"},"client_ip":""}`, ""},
	{"unknown field", `{"protocol":"http","action":"http.read","subject":{"kind":"user"},"headers":{}}`, `unknown field "headers"`},
	{"trailing data", `{"protocol":"http","action":"http.read","subject":{"kind":"user"}} {}`, "trailing data"},
	{"not JSON", `protocol: http`, "invalid character"},
	{"missing fields", `{"subject":{"kind":"robot"}}`, `protocol: ""`},
	{"empty", ``, "EOF"},
	{"too large", `{"action":"` + strings.Repeat("a", MaxInputBytes) + `"}`, "larger than"},
}

// FuzzDecodeInput: whatever the bytes, DecodeInput answers an error or an input that
// validates and reads back the same from its own JSON (what policy eval decides is what the
// file said).
func FuzzDecodeInput(f *testing.F) {
	for _, c := range decodeInputCases {
		if len(c.body) < 4096 {
			f.Add(c.body)
		}
	}
	f.Fuzz(func(t *testing.T, body string) {
		in, err := DecodeInput(strings.NewReader(body))
		if err != nil {
			return
		}
		if err := in.Validate(); err != nil {
			t.Fatalf("decoded an invalid input: %v", err)
		}
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeInput(bytes.NewReader(b))
		if err != nil || !reflect.DeepEqual(again, in) {
			t.Fatalf("%s read back as %+v, %v; want %+v", b, again, err, in)
		}
	})
}
