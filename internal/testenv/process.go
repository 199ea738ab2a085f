package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// process is a child started in its own process group with stdout and stderr
// appended to a log file.
type process struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed when the leader has been reaped
	err  error         // Wait's result, valid after done
}

func startProcess(cmd *exec.Cmd, logPath string) (*process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child holds its own descriptor
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the leader has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes how the leader exited; call only after done.
func (p *process) exitError() error {
	if p.err == nil {
		return errors.New("exited with status 0")
	}
	return p.err
}

// stop sends sig to the whole group, waits up to grace for the leader, then
// SIGKILLs the group. The final SIGKILL also runs after a clean exit, so no
// child of the leader survives it.
func (p *process) stop(sig syscall.Signal, grace time.Duration) {
	pgid := p.cmd.Process.Pid
	if !p.exited() {
		_ = syscall.Kill(-pgid, sig)
		timer := time.NewTimer(grace)
		select {
		case <-p.done:
		case <-timer.C:
		}
		timer.Stop()
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-p.done
}

func (p *process) String() string {
	return fmt.Sprintf("%s (pid %d)", p.cmd.Path, p.cmd.Process.Pid)
}

// Process is a child started by Start.
type Process struct{ p *process }

// Start starts cmd in its own process group, with stdout and stderr appended to logPath,
// and stops the whole group when the test ends: SIGTERM, then SIGKILL after grace. If the
// test failed, the tail of the log is logged first.
func Start(t testing.TB, cmd *exec.Cmd, logPath string, grace time.Duration) *Process {
	t.Helper()
	p, err := startProcess(cmd, logPath)
	if err != nil {
		t.Fatalf("testenv: start %s: %v", cmd.Path, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("testenv: %s log tail (%s):\n%s", p, logPath, tailFile(logPath, 40))
		}
		p.stop(syscall.SIGTERM, grace)
	})
	return &Process{p}
}

// Exited reports whether the process has ended, and if so how.
func (p *Process) Exited() (bool, error) {
	if !p.p.exited() {
		return false, nil
	}
	return true, p.p.exitError()
}
