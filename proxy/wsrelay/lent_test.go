package wsrelay

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

func TestLentConn(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		raw  bool
	}{{"descriptor", true}, {"no descriptor", false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			server, client := tcpPair(t)
			c := &lentConn{Conn: server, early: []byte("early")}
			if tc.raw {
				if c.raw = rawConnOf(server); c.raw == nil {
					t.Fatal("a TCP connection has no raw descriptor")
				}
			}
			read := func(n int) string {
				t.Helper()
				p := make([]byte, n)
				got, err := c.Read(p)
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				return string(p[:got])
			}
			if _, err := client.Write([]byte("hello world")); err != nil {
				t.Fatal(err)
			}
			// What arrived behind the upgrade request comes first, then the socket.
			if got := read(3); got != "ear" {
				t.Fatalf("got %q, want %q", got, "ear")
			}
			if got := read(64); got != "ly" {
				t.Fatalf("got %q, want %q", got, "ly")
			}
			var got string
			for len(got) < 5 {
				got += read(5 - len(got))
			}
			if got != "hello" {
				t.Fatalf("got %q, want %q", got, "hello")
			}
			for len(got) < len("hello world") {
				got += read(64)
			}
			if got != "hello world" {
				t.Fatalf("got %q, want %q", got, "hello world")
			}
			// Everything that arrived has been read: the buffer is back in the pool.
			if c.lent != nil {
				t.Fatal("a buffer is still lent with nothing left to read")
			}
			client.Close()
			if n, err := c.Read(make([]byte, 64)); n != 0 || err != io.EOF {
				t.Fatalf("got %d, %v, want 0, EOF", n, err)
			}
		})
	}
}

func TestLentConnLargeReadsBypassTheBuffer(t *testing.T) {
	t.Parallel()
	server, client := tcpPair(t)
	c := &lentConn{Conn: server, raw: rawConnOf(server)}
	msg := make([]byte, 3*readBufferSize)
	for i := range msg {
		msg[i] = byte(i)
	}
	go func() { client.Write(msg) }()
	got := make([]byte, 0, len(msg))
	p := make([]byte, readBufferSize)
	for len(got) < len(msg) {
		n, err := c.Read(p)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if c.lent != nil {
			t.Fatal("a read of a whole buffer borrowed one")
		}
		got = append(got, p[:n]...)
	}
	if string(got) != string(msg) {
		t.Fatal("got other bytes than were sent")
	}
}

func TestLentConnClosedWhileWaiting(t *testing.T) {
	t.Parallel()
	server, _ := tcpPair(t)
	c := &lentConn{Conn: server, raw: rawConnOf(server)}
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 16))
		done <- err
	}()
	server.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("got %v, want %v", err, net.ErrClosed)
	}
}

// A client may send its first frame right behind the upgrade request, before the 101: those
// bytes sit in net/http's reader when the connection is hijacked, and must be read first.
func TestLentResponseKeepsEarlyFrames(t *testing.T) {
	t.Parallel()
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(lentResponse{w}, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			got <- "accept: " + err.Error()
			return
		}
		defer c.CloseNow()
		_, data, err := c.Read(r.Context())
		if err != nil {
			got <- "read: " + err.Error()
			return
		}
		got <- string(data)
	}))
	t.Cleanup(srv.Close)
	nc, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	payload := []byte(`{"type":"req","id":"1","method":"connect"}`)
	mask := [4]byte{1, 2, 3, 4}
	frame := append([]byte{0x81, 0x80 | byte(len(payload))}, mask[:]...)
	for i, b := range payload {
		frame = append(frame, b^mask[i%4])
	}
	upgrade := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := nc.Write(append([]byte(upgrade), frame...)); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != string(payload) {
			t.Fatalf("got %q, want %q", s, payload)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the frame sent with the upgrade request never arrived")
	}
}
