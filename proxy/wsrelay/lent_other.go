//go:build !unix

package wsrelay

import (
	"net"
	"syscall"
)

// rawConnOf returns nil: reads wait holding their buffer.
func rawConnOf(net.Conn) syscall.RawConn { return nil }

func readFD(uintptr, []byte) (int, error) { return 0, syscall.EINVAL }
