package testenv

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// redisStartTimeout bounds one redis-server start; it answers PING within
// milliseconds, so hitting this means something is wrong.
const redisStartTimeout = 15 * time.Second

// RedisServer is a redis-server child process on a loopback port, with no
// persistence unless started by RedisDurable. Its methods may be called from any
// goroutine.
type RedisServer struct {
	// Addr is host:port, for example "127.0.0.1:40123".
	Addr string
	// Port is the TCP port in Addr.
	Port int

	t      testing.TB
	bin    string
	dir    string
	starts int // starts so far, numbering the log files
	// durable: an append-only file synced at every write, kept across restarts.
	durable bool

	mu   sync.Mutex
	proc *process
}

// Redis starts a redis-server on a free loopback port and stops it when the
// test ends. It fails the test, never skips it, when redis-server is missing.
func Redis(t testing.TB) *RedisServer {
	t.Helper()
	return startRedis(t, false)
}

// RedisDurable is Redis with an append-only file synced (fsync) before every write is
// acknowledged, kept in the server's directory: a Kill and Restart lose no acknowledged
// write.
func RedisDurable(t testing.TB) *RedisServer {
	t.Helper()
	return startRedis(t, true)
}

func startRedis(t testing.TB, durable bool) *RedisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("testenv: redis-server not found on PATH (apt-get install redis-server, or run make test which installs it): %v", err)
	}
	r := &RedisServer{t: t, bin: bin, dir: t.TempDir(), durable: durable}
	t.Cleanup(r.Stop)

	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			t.Fatalf("testenv: free port: %v", err)
		}
		if lastErr = r.start(port); lastErr == nil {
			return r
		}
	}
	t.Fatalf("testenv: redis-server did not start: %v", lastErr)
	return nil
}

// start runs redis-server on port and waits for PING. The caller must not
// hold r.mu.
func (r *RedisServer) start(port int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.starts++
	logPath := filepath.Join(r.dir, fmt.Sprintf("redis-%d.log", r.starts))
	aof := []string{"--appendonly", "no"}
	if r.durable {
		aof = []string{"--appendonly", "yes", "--appendfsync", "always"}
	}
	cmd := exec.Command(r.bin, append([]string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--dir", r.dir,
		"--daemonize", "no",
		"--logfile", "",
	}, aof...)...)
	proc, err := startProcess(cmd, logPath)
	if err != nil {
		return err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := waitRedis(addr, proc, time.Now().Add(redisStartTimeout)); err != nil {
		proc.stop(syscall.SIGKILL, 0)
		return fmt.Errorf("%w\n--- %s (tail) ---\n%s", err, logPath, tailFile(logPath, 30))
	}
	r.proc, r.Addr, r.Port = proc, addr, port
	return nil
}

// waitRedis polls PING until it answers PONG, the process exits or the
// deadline passes.
func waitRedis(addr string, proc *process, deadline time.Time) error {
	backoff := 5 * time.Millisecond
	for {
		if proc.exited() {
			return fmt.Errorf("redis-server on %s exited: %v", addr, proc.exitError())
		}
		err := pingRedis(addr)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s not answering PING: %v", addr, err)
		}
		select {
		case <-proc.done:
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

func pingRedis(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// Kill SIGKILLs the server, as a crash would. Clients see their connections
// reset; a later Restart brings the server back on the same port, empty unless
// it is durable.
func (r *RedisServer) Kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil {
		r.proc.stop(syscall.SIGKILL, 0)
		r.proc = nil
	}
}

// Stop shuts the server down with SIGTERM (SIGKILL after 5 s). It is safe to
// call more than once; the test's cleanup calls it too.
func (r *RedisServer) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil {
		r.proc.stop(syscall.SIGTERM, 5*time.Second)
		r.proc = nil
	}
}

// Restart kills the server if it runs and starts it again on the same port
// (empty unless durable), failing the test if it cannot.
func (r *RedisServer) Restart() {
	r.t.Helper()
	r.Kill()
	// The port was just ours; a bind can still fail while another process
	// grabbed it, so try a few times before giving up.
	var err error
	for range 3 {
		if err = r.start(r.Port); err == nil {
			return
		}
	}
	r.t.Fatalf("testenv: redis-server restart on %s: %v", r.Addr, err)
}
