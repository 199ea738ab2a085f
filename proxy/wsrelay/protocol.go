package wsrelay

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"

	"github.com/moltgate/moltgate/policies"
)

// frame is a client request of the OpenClaw protocol, read with exact key matching: Go's
// struct decoding matches keys without regard to case, the gateway's JSON.parse does not, and
// {"method":"terminal.open","Method":"health"} must not read as "health" here.
type frame struct {
	id     json.RawMessage // string or number, echoed in our responses
	method string
	params map[string]json.RawMessage // nil when absent
	fields map[string]json.RawMessage
}

var errProtocol = errors.New("wsrelay: not an OpenClaw request frame")

func parseFrame(data []byte) (*frame, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		return nil, errProtocol
	}
	var typ, method string
	if json.Unmarshal(fields["type"], &typ) != nil || typ != "req" {
		return nil, errProtocol
	}
	if json.Unmarshal(fields["method"], &method) != nil || method == "" || len(method) > 128 {
		return nil, errProtocol
	}
	id := bytes.TrimSpace(fields["id"])
	if len(id) == 0 || (id[0] != '"' && (id[0] < '0' || id[0] > '9')) {
		return nil, errProtocol
	}
	f := &frame{id: id, method: method, fields: fields}
	if p, ok := fields["params"]; ok && !bytes.Equal(bytes.TrimSpace(p), []byte("null")) {
		if err := json.Unmarshal(p, &f.params); err != nil {
			return nil, errProtocol
		}
	}
	return f, nil
}

// str returns params[key] if it is a string.
func (f *frame) str(key string) string {
	var s string
	if raw, ok := f.params[key]; ok && json.Unmarshal(raw, &s) == nil {
		return s
	}
	return ""
}

// names returns the tool or skill the request acts on, for the policy, read from the params
// fields in which the gateway looks for it, in the order it looks:
//   - tools.invoke: "name" (the RPC requires it; the tool runner takes name ?? tool);
//   - mcp.app.callTool: "toolName";
//   - skills.*: "skillKey", "name" or "slug", depending on the method and the skill's source.
//
// ok is false when two of those fields name different things: a frame decided on one name
// must not run under another.
func (f *frame) names() (tool, skill string, ok bool) {
	switch {
	case f.method == "tools.invoke":
		tool, ok = f.oneName("name", "tool")
	case f.method == "mcp.app.callTool":
		tool, ok = f.oneName("toolName", "name")
	case strings.HasPrefix(f.method, "skills."):
		skill, ok = f.oneName("skillKey", "name", "slug")
	default:
		ok = true
	}
	return tool, skill, ok
}

// channels returns, for a configuration write (a config.* method with a "raw" config), the
// "channels" section of the config it writes, for the policy's channel controls; unreadable
// is true when raw is not a JSON object (the gateway also reads JSON5, which moltgate does
// not: the policy then assumes the write opens channels). Other frames give nil, false.
func (f *frame) channels() (channels any, unreadable bool) {
	raw, ok := f.params["raw"]
	if !ok || !strings.HasPrefix(f.method, "config.") {
		return nil, false
	}
	var text string
	var cfg map[string]any
	if json.Unmarshal(raw, &text) != nil || json.Unmarshal([]byte(text), &cfg) != nil || cfg == nil {
		return nil, true
	}
	return cfg["channels"], false
}

// oneName returns the first non-empty string among params[keys...], and false when another
// one differs from it once canonicalised as the policy sees names.
func (f *frame) oneName(keys ...string) (string, bool) {
	var first string
	for _, k := range keys {
		s := f.str(k)
		switch {
		case s == "":
		case first == "":
			first = s
		case policies.CanonicalName(s) != policies.CanonicalName(first):
			return "", false
		}
	}
	return first, true
}

// encode re-encodes the frame with params replaced.
func (f *frame) encode() ([]byte, error) {
	p, err := json.Marshal(f.params)
	if err != nil {
		return nil, err
	}
	f.fields["params"] = p
	return json.Marshal(f.fields)
}

// errorResponse is the protocol's refusal of request id: the client's pending call resolves
// with ok:false instead of hanging.
func errorResponse(id json.RawMessage, code, message string) []byte {
	return errorResponseWith(id, code, message, nil)
}

// protocolError is the error of a refused response; Details as the gateway gives them.
type protocolError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Details any    `json:"details,omitempty"`
}

func errorResponseWith(id json.RawMessage, code, message string, details any) []byte {
	b, _ := json.Marshal(struct {
		Type  string          `json:"type"`
		ID    json.RawMessage `json:"id"`
		OK    bool            `json:"ok"`
		Error protocolError   `json:"error"`
	}{Type: "res", ID: id, Error: protocolError{code, message, details}})
	return b
}

// missingScopeResponse refuses request id as the gateway refuses a method the caller's
// scopes do not cover (FORBIDDEN, "missing scope: S", details MISSING_SCOPE): the Control UI
// tells the person they lack the permission rather than retrying the call.
func missingScopeResponse(id json.RawMessage, reason, scope, decisionID string) []byte {
	return errorResponseWith(id, "FORBIDDEN", "moltgate: "+reason+": missing scope: "+scope, struct {
		Code           string   `json:"code"`
		MissingScope   string   `json:"missingScope"`
		RequiredScopes []string `json:"requiredScopes"`
		DecisionID     string   `json:"decision_id"`
	}{"MISSING_SCOPE", scope, []string{scope}, decisionID})
}

// refusalDetails are the details of moltgate's refusal of a request: the decision's id, for
// support (the audit event's decision_id).
type refusalDetails struct {
	DecisionID string `json:"decision_id"`
}

func okResponse(id json.RawMessage, payload any) []byte {
	b, _ := json.Marshal(struct {
		Type    string          `json:"type"`
		ID      json.RawMessage `json:"id"`
		OK      bool            `json:"ok"`
		Payload any             `json:"payload"`
	}{"res", id, true, payload})
	return b
}
