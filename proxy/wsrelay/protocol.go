package wsrelay

import (
	"bytes"
	"encoding/json"
	"errors"
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

// tool and skill name what a tool or skill call acts on, for the policy.
func (f *frame) tool() string {
	if f.method == "tools.invoke" || f.method == "mcp.app.callTool" {
		return f.str("name")
	}
	return ""
}

func (f *frame) skill() string {
	if len(f.method) < 7 || f.method[:7] != "skills." {
		return ""
	}
	for _, k := range []string{"skillKey", "name", "slug"} {
		if s := f.str(k); s != "" {
			return s
		}
	}
	return ""
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
	b, _ := json.Marshal(struct {
		Type  string          `json:"type"`
		ID    json.RawMessage `json:"id"`
		OK    bool            `json:"ok"`
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}{Type: "res", ID: id, Error: struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}{code, message}})
	return b
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
