package wsrelay

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
)

// An idle client socket should hold no buffer. websocket.Accept reads and writes through
// the bufio.ReadWriter of the hijacked connection, which net/http sizes at 4 KiB each way and
// which would stay allocated for as long as the socket is open, idle or not. lentResponse
// hands Accept a connection that reads through a buffer lent only while bytes that have
// arrived wait to be read, and a smaller write buffer.
const (
	// readBufferSize is the most one read takes from the kernel, as net/http's reader did.
	readBufferSize = 4 << 10
	// writeBufferSize holds a frame header and a typical gateway message, which then leave
	// in one write. A message of 2 to 4 KiB costs one more write than net/http's 4 KiB
	// would; longer ones are written past the buffer either way.
	writeBufferSize = 2 << 10
	// headerReaderSize is what Accept's own bufio.Reader holds: frame headers (at most 14
	// bytes) are read through it, payloads pass it by.
	headerReaderSize = 64
)

var readBuffers = sync.Pool{New: func() any { b := make([]byte, readBufferSize); return &b }}

// lentResponse is the ResponseWriter given to websocket.Accept: its Hijack wraps the
// server's connection in a lentConn.
type lentResponse struct{ http.ResponseWriter }

// Unwrap lets http.ResponseController find the wrapped writer's other methods.
func (w lentResponse) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w lentResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// net/http has flushed the 101 before handing the connection over; anything still
	// buffered either way is passed on, not dropped.
	if err := brw.Writer.Flush(); err != nil {
		nc.Close()
		return nil, nil, err
	}
	c := &lentConn{Conn: nc, raw: rawConnOf(nc)}
	if n := brw.Reader.Buffered(); n > 0 {
		p, _ := brw.Reader.Peek(n)
		c.early = bytes.Clone(p) // frames the client sent right behind its upgrade request
	}
	return c, bufio.NewReadWriter(bufio.NewReaderSize(c, headerReaderSize), bufio.NewWriterSize(nc, writeBufferSize)), nil
}

// lentConn reads a socket through a buffer borrowed from readBuffers once bytes have
// arrived, and given back as soon as they have been read: while the socket waits for data it
// holds none. Read is not safe for concurrent use (websocket.Conn reads under a lock).
type lentConn struct {
	net.Conn
	raw   syscall.RawConn // nil when the connection has no descriptor: reads wait holding the buffer
	early []byte

	lent *[]byte
	r, w int
}

func (c *lentConn) Read(p []byte) (int, error) {
	if len(c.early) > 0 {
		n := copy(p, c.early)
		if c.early = c.early[n:]; len(c.early) == 0 {
			c.early = nil
		}
		return n, nil
	}
	if c.lent == nil {
		if len(p) >= readBufferSize {
			return c.Conn.Read(p)
		}
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, (*c.lent)[c.r:c.w])
	if c.r += n; c.r == c.w {
		readBuffers.Put(c.lent)
		c.lent = nil
	}
	return n, nil
}

// fill waits for data without a buffer, then borrows one and reads what has arrived.
func (c *lentConn) fill() error {
	if c.raw == nil {
		b := readBuffers.Get().(*[]byte)
		n, err := c.Conn.Read(*b)
		if n == 0 {
			readBuffers.Put(b)
			return err
		}
		c.lent, c.r, c.w = b, 0, n
		return nil
	}
	var n int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		b := readBuffers.Get().(*[]byte)
		n, rerr = readFD(fd, *b)
		if rerr == syscall.EAGAIN {
			readBuffers.Put(b) // nothing yet: wait for readiness holding no buffer
			return false
		}
		if n > 0 {
			c.lent, c.r, c.w = b, 0, n
		} else {
			readBuffers.Put(b)
		}
		return true
	})
	switch {
	case err != nil:
		return err
	case rerr != nil:
		return &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", rerr)}
	case n <= 0:
		return io.EOF
	}
	return nil
}
