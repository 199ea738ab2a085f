package testenv

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// LLM is a loopback stand-in for an OpenAI-compatible model API (POST /v1/chat/completions,
// streamed or not; GET /v1/models), so a real OpenClaw gateway can complete agent turns
// offline. Every completion answers Reply. Point a gateway at it with [LLM.ProviderConfig].
type LLM struct {
	// URL is the API base, http://127.0.0.1:port/v1.
	URL string
	// APIKey is the key the stand-in expects as a Bearer token; other keys get 401.
	APIKey string
	// Reply is the assistant text of every completion.
	Reply string

	mu       sync.Mutex
	requests int
	prompts  []string
}

// NewLLM starts an LLM stand-in that lives until the test ends.
func NewLLM(t testing.TB, reply string) *LLM {
	t.Helper()
	l := &LLM{APIKey: "sk-moltgate-test-" + randomToken()[:16], Reply: reply}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: llm: %v", err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(l.serve))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	l.URL = srv.URL + "/v1"
	return l
}

// Requests is the number of completions answered.
func (l *LLM) Requests() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.requests
}

// Prompts returns the user messages (raw JSON content, joined by newlines) of every
// completion answered.
func (l *LLM) Prompts() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.prompts...)
}

// ProviderConfig is the OpenClaw configuration that makes model ref provider/model (as
// "provider/model") the default model, served by the stand-in: merge it into the gateway's
// config, or send it in a config.patch.
func (l *LLM) ProviderConfig(provider, model string) map[string]any {
	return map[string]any{
		"models": map[string]any{
			"mode": "merge",
			"providers": map[string]any{
				provider: map[string]any{
					"baseUrl": l.URL,
					"apiKey":  l.APIKey,
					"api":     "openai-completions",
					"models": []any{map[string]any{
						"id": model, "name": model, "reasoning": false, "input": []string{"text"},
						"cost":          map[string]any{"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0},
						"contextWindow": 128000, "maxTokens": 4096,
					}},
				},
			},
		},
		"agents": map[string]any{"defaults": map[string]any{"model": map[string]any{"primary": provider + "/" + model}}},
	}
}

func (l *LLM) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+l.APIKey {
		http.Error(w, `{"error":{"message":"bad api key","type":"invalid_request_error"}}`, http.StatusUnauthorized)
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v1/models":
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"object":"list","data":[]}`)
		return
	case r.Method == http.MethodPost && r.URL.Path == "/v1/chat/completions":
	default:
		http.NotFound(w, r)
		return
	}
	var req struct {
		Model    string `json:"model"`
		Stream   bool   `json:"stream"`
		Messages []struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, `{"error":{"message":"bad json"}}`, http.StatusBadRequest)
		return
	}
	var user []string
	for _, m := range req.Messages {
		if m.Role == "user" {
			user = append(user, string(m.Content))
		}
	}
	prompt := strings.Join(user, "\n")
	l.mu.Lock()
	l.requests++
	l.prompts = append(l.prompts, prompt)
	l.mu.Unlock()

	id, created := "chatcmpl-moltgate", time.Now().Unix()
	usage := map[string]int{"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"id": id, "object": "chat.completion", "created": created, "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
				"message": map[string]any{"role": "assistant", "content": l.Reply}}},
			"usage": usage,
		})
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	fl, _ := w.(http.Flusher)
	send := func(v any) {
		b, _ := json.Marshal(v)
		fmt.Fprintf(w, "data: %s\n\n", b)
		if fl != nil {
			fl.Flush()
		}
	}
	chunk := func(delta map[string]any, finish any) map[string]any {
		return map[string]any{"id": id, "object": "chat.completion.chunk", "created": created, "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}}}
	}
	send(chunk(map[string]any{"role": "assistant", "content": ""}, nil))
	for _, word := range strings.SplitAfter(l.Reply, " ") {
		send(chunk(map[string]any{"content": word}, nil))
	}
	last := chunk(map[string]any{}, "stop")
	last["usage"] = usage
	send(last)
	fmt.Fprint(w, "data: [DONE]\n\n")
	if fl != nil {
		fl.Flush()
	}
}
