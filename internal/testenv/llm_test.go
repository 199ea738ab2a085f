package testenv

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestLLM(t *testing.T) {
	l := NewLLM(t, "two words")
	post := func(key, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, l.URL+"/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := post("sk-wrong", `{"messages":[]}`); code != http.StatusUnauthorized {
		t.Errorf("wrong key: got %d, want 401", code)
	}
	code, body := post(l.APIKey, `{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	if code != 200 || !strings.Contains(body, `"content":"two words"`) {
		t.Errorf("completion: got %d %s", code, body)
	}
	code, body = post(l.APIKey, `{"model":"m","stream":true,"messages":[{"role":"user","content":"again"}]}`)
	if code != 200 || !strings.Contains(body, `"content":"two "`) || !strings.Contains(body, `"content":"words"`) ||
		!strings.HasSuffix(body, "data: [DONE]\n\n") {
		t.Errorf("stream: got %d %s", code, body)
	}
	if got := l.Prompts(); l.Requests() != 2 || len(got) != 2 || got[1] != `"again"` {
		t.Errorf("prompts %q after %d requests, want 2 ending in \"again\"", got, l.Requests())
	}
}
