package wsrelay

import (
	"reflect"
	"testing"
)

// Issue 12: a configuration write hands the policy the channels section of the config it
// writes; one moltgate cannot read is marked unreadable (the policy then assumes it opens a
// channel); every other frame carries neither.
func TestFrameChannels(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		msg        string
		want       any
		unreadable bool
	}{
		{"patch opens whatsapp", `{"type":"req","id":"1","method":"config.patch","params":{"raw":"{\"channels\":{\"whatsapp\":{\"dmPolicy\":\"open\"}}}","baseHash":"h"}}`,
			map[string]any{"whatsapp": map[string]any{"dmPolicy": "open"}}, false},
		{"set without channels", `{"type":"req","id":"1","method":"config.set","params":{"raw":"{\"gateway\":{}}"}}`, nil, false},
		{"json5 raw", `{"type":"req","id":"1","method":"config.apply","params":{"raw":"{channels: {discord: {}}}"}}`, nil, true},
		{"raw not a string", `{"type":"req","id":"1","method":"config.apply","params":{"raw":{"channels":{}}}}`, nil, true},
		{"raw an array", `{"type":"req","id":"1","method":"config.patch","params":{"raw":"[]"}}`, nil, true},
		{"not a config method", `{"type":"req","id":"1","method":"chat.send","params":{"raw":"{\"channels\":{}}"}}`, nil, false},
		{"config read", `{"type":"req","id":"1","method":"config.get","params":{}}`, nil, false},
	}
	for _, tt := range tests {
		f, err := parseFrame([]byte(tt.msg))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		got, unreadable := f.channels()
		if !reflect.DeepEqual(got, tt.want) || unreadable != tt.unreadable {
			t.Errorf("%s: got %v, %v; want %v, %v", tt.name, got, unreadable, tt.want, tt.unreadable)
		}
	}
}
