package proxy

import (
	"net/http"
	"strconv"
)

// StatusClientClosed is logged and counted (never sent) when the client went away first.
const StatusClientClosed = 499

// refusal is the body of every response moltgate makes itself: a short message and a stable
// reason code, never internals.
var refusalMessages = map[int]string{
	http.StatusBadRequest:            "bad request",
	http.StatusUnauthorized:          "unauthenticated",
	http.StatusForbidden:             "forbidden",
	http.StatusNotFound:              "not found",
	http.StatusMethodNotAllowed:      "method not allowed",
	http.StatusRequestEntityTooLarge: "request body too large",
	http.StatusUnsupportedMediaType:  "unsupported media type",
	http.StatusTooManyRequests:       "too many requests",
	http.StatusBadGateway:            "upstream unavailable",
	http.StatusServiceUnavailable:    "unavailable",
	http.StatusGatewayTimeout:        "upstream timeout",
}

// Refuse writes {"error": …, "reason": …, "decision_id": …}, and the decision id in
// DecisionIDHeader: the policy decision's when one was set on w, else a new one. reason is
// one of moltgate's fixed codes, so no JSON escaping is needed beyond quoting.
func Refuse(w http.ResponseWriter, status int, reason string) {
	id := DecisionID(w)
	msg, ok := refusalMessages[status]
	if !ok {
		status, msg = http.StatusForbidden, refusalMessages[http.StatusForbidden]
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if status == http.StatusUnauthorized {
		h.Set("Www-Authenticate", `Bearer realm="moltgate"`)
	}
	w.WriteHeader(status)
	body := make([]byte, 0, 128)
	body = append(body, `{"error":`...)
	body = strconv.AppendQuote(body, msg)
	body = append(body, `,"reason":`...)
	body = strconv.AppendQuote(body, reason)
	body = append(body, `,"decision_id":`...)
	body = strconv.AppendQuote(body, id)
	body = append(body, "}\n"...)
	_, _ = w.Write(body)
}
