package testenv

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// respDo sends one command as a RESP array and returns the reply rendered
// by fmt.Sprint: simple and bulk strings as is, null as <nil>, arrays as
// [a b], errors as "ERR ...".
func respDo(t *testing.T, addr string, args ...string) (string, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	v, err := readRESP(bufio.NewReader(c))
	if err != nil {
		return "", err
	}
	return fmt.Sprint(v), nil
}

func readRESP(br *bufio.Reader) (any, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, fmt.Errorf("empty RESP line")
	}
	switch line[0] {
	case '+', '-', ':':
		return line[1:], nil
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return nil, err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return nil, err
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = readRESP(br); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown RESP reply %q", line)
}

func mustDo(t *testing.T, addr string, want string, args ...string) {
	t.Helper()
	got, err := respDo(t, addr, args...)
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	if got != want {
		t.Fatalf("%v: got %q, want %q", args, got, want)
	}
}

func TestRedis(t *testing.T) {
	t.Parallel()
	r := Redis(t)
	if !strings.HasPrefix(r.Addr, "127.0.0.1:") || r.Port == 0 {
		t.Fatalf("Addr %q Port %d: want a loopback address", r.Addr, r.Port)
	}
	mustDo(t, r.Addr, "PONG", "PING")
	mustDo(t, r.Addr, "OK", "SET", "k", "v1")
	mustDo(t, r.Addr, "v1", "GET", "k")
	// No persistence: a restart must come back empty.
	mustDo(t, r.Addr, "[save ]", "CONFIG", "GET", "save")
	mustDo(t, r.Addr, "[appendonly no]", "CONFIG", "GET", "appendonly")

	addr := r.Addr
	r.Kill()
	if _, err := respDo(t, addr, "PING"); err == nil {
		t.Fatalf("PING after Kill: got an answer, want a connection error")
	}
	r.Restart()
	if r.Addr != addr {
		t.Fatalf("Addr after Restart: got %s, want %s", r.Addr, addr)
	}
	mustDo(t, r.Addr, "<nil>", "GET", "k")
	mustDo(t, r.Addr, "OK", "SET", "k", "v2")
	mustDo(t, r.Addr, "v2", "GET", "k")

	r.Stop()
	if _, err := respDo(t, addr, "PING"); err == nil {
		t.Fatalf("PING after Stop: got an answer, want a connection error")
	}
	r.Stop() // idempotent, and the cleanup calls it again
}

func TestRedisTwoAtOnce(t *testing.T) {
	t.Parallel()
	a, b := Redis(t), Redis(t)
	if a.Addr == b.Addr {
		t.Fatalf("two servers share %s", a.Addr)
	}
	mustDo(t, a.Addr, "OK", "SET", "k", "a")
	mustDo(t, b.Addr, "<nil>", "GET", "k")
}
