package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/coder/websocket"
)

// Frame is one OpenClaw gateway protocol frame: a "req" from the client, a
// "res" answering it, or a server "event".
type Frame struct {
	Type    string          `json:"type"`
	ID      string          `json:"id,omitempty"`
	Method  string          `json:"method,omitempty"`
	Params  json.RawMessage `json:"params,omitempty"`
	OK      bool            `json:"ok,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
	Error   *FrameError     `json:"error,omitempty"`
	Event   string          `json:"event,omitempty"`

	// Raw is the frame as received.
	Raw []byte `json:"-"`
}

// FrameError is the error of a failed "res" frame.
type FrameError struct {
	Code         string          `json:"code"`
	Message      string          `json:"message"`
	Retryable    bool            `json:"retryable,omitempty"`
	RetryAfterMs int             `json:"retryAfterMs,omitempty"`
	Details      json.RawMessage `json:"details,omitempty"`
}

func (e *FrameError) Error() string {
	return e.Code + ": " + e.Message
}

// startupUnavailable reports whether the gateway refused because its startup
// sidecars are still loading; the connection is closed with 1013 after it.
func (e *FrameError) startupUnavailable() bool {
	if e == nil || e.Code != "UNAVAILABLE" || !e.Retryable {
		return false
	}
	var d struct {
		Reason string `json:"reason"`
	}
	_ = json.Unmarshal(e.Details, &d)
	return d.Reason == "startup-sidecars"
}

// OpenClawConn is a minimal OpenClaw gateway WebSocket client for tests. It
// is not safe for concurrent use.
type OpenClawConn struct {
	// Conn is the underlying WebSocket.
	Conn *websocket.Conn
	// Challenge is the connect.challenge event the server sent first.
	Challenge Frame
	// Events holds the event frames read while waiting for responses.
	Events []Frame

	nextID atomic.Int64
}

// DialOpenClaw opens a WebSocket to url (ws://host:port/...), sending header
// with the upgrade request, and reads the server's connect.challenge. The
// *http.Response is returned even on failure when the server answered, so a
// refused upgrade can be asserted on.
func DialOpenClaw(ctx context.Context, url string, header http.Header) (*OpenClawConn, *http.Response, error) {
	return DialOpenClawWith(ctx, url, &websocket.DialOptions{HTTPHeader: header})
}

// DialOpenClawWith is DialOpenClaw with the dial options given whole (a client bound to a
// source address, say).
func DialOpenClawWith(ctx context.Context, url string, opts *websocket.DialOptions) (*OpenClawConn, *http.Response, error) {
	c, resp, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		return nil, resp, err
	}
	// hello-ok lists every method and carries a snapshot: far above the 32 KiB
	// default read limit.
	c.SetReadLimit(64 << 20)
	oc := &OpenClawConn{Conn: c}
	f, err := oc.ReadFrame(ctx)
	if err != nil {
		c.CloseNow()
		return nil, resp, fmt.Errorf("reading connect.challenge: %w", err)
	}
	if f.Type != "event" || f.Event != "connect.challenge" {
		c.CloseNow()
		return nil, resp, fmt.Errorf("first frame is not connect.challenge: %s", f.Raw)
	}
	oc.Challenge = f
	return oc, resp, nil
}

// ReadFrame reads and decodes the next frame.
func (c *OpenClawConn) ReadFrame(ctx context.Context) (Frame, error) {
	_, data, err := c.Conn.Read(ctx)
	if err != nil {
		return Frame{}, err
	}
	var f Frame
	if err := json.Unmarshal(data, &f); err != nil {
		return Frame{}, fmt.Errorf("decoding frame %q: %w", data, err)
	}
	f.Raw = data
	return f, nil
}

// Request sends a "req" frame and returns its "res", keeping any event frames
// that arrive first in c.Events. A failed response is returned as a frame
// with OK false, not as an error; err is for transport failures only.
func (c *OpenClawConn) Request(ctx context.Context, method string, params any) (Frame, error) {
	id := "testenv-" + strconv.FormatInt(c.nextID.Add(1), 10)
	p, err := json.Marshal(params)
	if err != nil {
		return Frame{}, err
	}
	req, err := json.Marshal(Frame{Type: "req", ID: id, Method: method, Params: p})
	if err != nil {
		return Frame{}, err
	}
	if err := c.Conn.Write(ctx, websocket.MessageText, req); err != nil {
		return Frame{}, err
	}
	for {
		f, err := c.ReadFrame(ctx)
		if err != nil {
			return Frame{}, err
		}
		switch {
		case f.Type == "res" && f.ID == id:
			return f, nil
		case f.Type == "event":
			c.Events = append(c.Events, f)
		}
	}
}

// ConnectParams returns the params of a CLI-shaped operator "connect"
// request asking for read, write and admin scopes. auth is sent as
// params.auth when not nil, for example map[string]any{"token": tok}.
func ConnectParams(auth map[string]any) map[string]any {
	p := map[string]any{
		"minProtocol": 1,
		"maxProtocol": 99,
		"client": map[string]any{
			"id":       "cli",
			"version":  "0.0.0-testenv",
			"platform": "linux",
			"mode":     "cli",
		},
		"role":   "operator",
		"scopes": []string{"operator.read", "operator.write", "operator.admin"},
	}
	if auth != nil {
		p["auth"] = auth
	}
	return p
}

// Connect sends "connect" with [ConnectParams] (auth as given) and returns
// the response: a hello-ok payload when OK.
func (c *OpenClawConn) Connect(ctx context.Context, auth map[string]any) (Frame, error) {
	return c.Request(ctx, "connect", ConnectParams(auth))
}

// Close closes the WebSocket normally.
func (c *OpenClawConn) Close() error {
	err := c.Conn.Close(websocket.StatusNormalClosure, "")
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
