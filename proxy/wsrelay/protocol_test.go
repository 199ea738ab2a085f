package wsrelay

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/internal/testenv"
)

// Every message moltgate accepts must read, in the fields a decision rests on, exactly as
// the gateway reads it: the gateway decodes the bytes as UTF-8 and calls JSON.parse, so a
// real Node (the pinned one) reads a few thousand generated messages, built to disagree:
// escaped and case-varied keys, repeated keys, escapes in values, odd white space, nested and
// wrongly typed params. Where moltgate accepts a message, its type, method and the name
// fields it decides tools and skills on must be what JSON.parse reads.
func TestFramesReadAsTheGatewayReadsThem(t *testing.T) {
	msgs := differentialMessages(4000)
	dir := testenv.OpenClawDir(t)
	var in bytes.Buffer
	for _, m := range msgs {
		in.WriteString(base64.StdEncoding.EncodeToString(m))
		in.WriteByte('\n')
	}
	cmd := exec.Command(filepath.Join(dir, "node_modules", ".bin", "node"), "testdata/gateway_reads.mjs")
	cmd.Stdin = &in
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	type reading struct {
		OK           bool
		Type, Method *string
		Params       map[string]*string
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	accepted := 0
	for i := 0; sc.Scan(); i++ {
		if i >= len(msgs) {
			t.Fatal("node printed more lines than it was given")
		}
		var js reading
		if err := json.Unmarshal(sc.Bytes(), &js); err != nil {
			t.Fatal(err)
		}
		f, err := parseFrame(msgs[i])
		if err != nil {
			continue // refused by moltgate: nothing to compare
		}
		accepted++
		switch {
		case !js.OK:
			t.Errorf("%q: moltgate reads method %q; JSON.parse refuses it", msgs[i], f.method)
		case js.Type == nil || *js.Type != "req" || js.Method == nil || *js.Method != f.method:
			t.Errorf("%q: moltgate reads a request for %q; JSON.parse reads type %v method %v", msgs[i], f.method, deref(js.Type), deref(js.Method))
		default:
			for k, v := range js.Params {
				if got := f.str(k); got != deref(v) {
					t.Errorf("%q: moltgate reads params.%s %q; JSON.parse reads %q", msgs[i], k, got, deref(v))
				}
			}
		}
	}
	// The comparison only sees what moltgate accepts: a generator whose every message is
	// refused would pass it.
	if accepted < len(msgs)/10 {
		t.Fatalf("moltgate accepted %d of %d generated messages; the generator must produce more requests", accepted, len(msgs))
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// differentialMessages builds n messages from a fixed seed, so a failure reproduces.
func differentialMessages(n int) [][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	ws := func() string { return pick("", "", " ", "\t", "\n", "\r\n ") }
	key := func(k string) string {
		switch r.IntN(8) {
		case 0: // one letter escaped
			i := r.IntN(len(k))
			return `"` + k[:i] + `\u00` + hexByte(k[i]) + k[i+1:] + `"`
		case 1:
			return `"` + strings.ToUpper(k[:1]) + k[1:] + `"`
		case 2:
			return `"` + k + ` "`
		default:
			return `"` + k + `"`
		}
	}
	value := func(s string) string {
		switch r.IntN(16) { // 7 in 16 values are mutated
		case 0:
			return `"` + s + `\u0000"`
		case 1:
			return `" ` + s + `"`
		case 2:
			return `"\ud800` + s + `"` // a lone surrogate
		case 3:
			return `"` + s + `\ud83d\ude00"` // a valid pair
		case 4:
			return `"` + strings.ReplaceAll(s, "e", `\u0065`) + `"`
		case 5:
			return `"` + strings.ReplaceAll(s, ".", `\/`) + `"`
		case 6:
			return pick("null", "7", "[]", "{}", `["`+s+`"]`, "true")
		default:
			return `"` + s + `"`
		}
	}
	member := func(k, v string) string { return ws() + key(k) + ws() + ":" + ws() + value(v) + ws() }
	var msgs [][]byte
	for range n {
		var params []string
		for range r.IntN(4) {
			params = append(params, member(pick("name", "tool", "toolName", "skillKey", "slug", "args"),
				pick("exec", "sessions_list", "bash", "web_search", "evil-skill", "")))
		}
		inner := "{" + strings.Join(params, ",") + "}"
		members := []string{
			member("type", pick("req", "req", "req", "req", "event", "Req")),
			ws() + `"id"` + ws() + ":" + ws() + pick(`"1"`, "2", `"x"`),
			member("method", pick("tools.invoke", "mcp.app.callTool", "skills.install", "chat.send", "health")),
		}
		if r.IntN(4) > 0 {
			members = append(members, ws()+key("params")+ws()+":"+ws()+pick(inner, inner, inner, "null", "[]"))
		}
		if r.IntN(3) == 0 { // a repeated key, before or after the first
			members = append(members, member(pick("method", "type", "params"), pick("health", "tools.invoke", "req")))
		}
		r.Shuffle(len(members), func(i, j int) { members[i], members[j] = members[j], members[i] })
		msgs = append(msgs, []byte(ws()+"{"+strings.Join(members, ",")+"}"+ws()))
	}
	return msgs
}

func hexByte(b byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[b>>4], digits[b&15]})
}
