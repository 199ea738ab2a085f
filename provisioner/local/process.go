package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// proc is one gateway process: started by this driver (cmd set), or adopted (found working
// in the gateway's folder, started by an earlier pass or process).
type proc struct {
	id   string
	pid  int
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	// stopping is set before a stop, so its exit is not taken for a death.
	stopping atomic.Bool
	// ready is set once the ready step saw it answer: only a ready process's death wakes
	// the reconciler (one that dies starting fails its pass, which retries with backoff).
	ready atomic.Bool
}

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// runInfo is what the folder records of its current process (run.json): how to recognise
// that it runs what the spec asks. No secret: keys are named by id and fingerprint.
type runInfo struct {
	PID     int       `json:"pid"`
	Port    int       `json:"port"`
	Keys    string    `json:"keys"`
	Started time.Time `json:"started"`
}

func (d *Driver) readRun(id string) (runInfo, bool) {
	var ri runInfo
	b, err := os.ReadFile(filepath.Join(d.dir(id), "run.json"))
	if err != nil || json.Unmarshal(b, &ri) != nil {
		return runInfo{}, false
	}
	return ri, true
}

func (d *Driver) writeRun(id string, ri runInfo) error {
	b, err := json.Marshal(ri)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(d.dir(id), "run.json"), b)
}

// find returns gateway id's live process: the one this driver tracks, else the process
// group leader working in the gateway's folder, which it adopts.
func (d *Driver) find(id string) *proc {
	d.mu.Lock()
	p := d.procs[id]
	d.mu.Unlock()
	if p != nil && p.alive() {
		return p
	}
	leader, _ := findProcs(d.dir(id))
	if leader == 0 {
		return nil
	}
	p = &proc{id: id, pid: leader, done: make(chan struct{})}
	d.mu.Lock()
	if cur := d.procs[id]; cur != nil && cur.alive() {
		d.mu.Unlock()
		return cur
	}
	d.procs[id] = p
	d.mu.Unlock()
	d.logger.LogAttrs(context.Background(), slog.LevelInfo, "local: adopted a running gateway process",
		slog.String("gateway", id), slog.Int("pid", leader))
	go d.watch(p)
	return p
}

// watch waits for an adopted process (not a child: nothing to Wait on) to exit.
func (d *Driver) watch(p *proc) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for range t.C {
		if syscall.Kill(p.pid, 0) != nil || !sameDir(p.pid, d.dir(p.id)) {
			d.exited(p, errors.New("process gone"))
			return
		}
	}
}

// exited records p's end; a ready gateway that died (not stopped) wakes the reconciler.
func (d *Driver) exited(p *proc, err error) {
	close(p.done)
	if p.stopping.Load() || !p.ready.Load() {
		return
	}
	d.logger.LogAttrs(context.Background(), slog.LevelWarn, "local: gateway process died; starting it again",
		slog.String("gateway", p.id), slog.Int("pid", p.pid), slog.Any("err", err))
	d.mu.Lock()
	wake := d.wake
	d.mu.Unlock()
	wake(p.id)
}

// start runs OpenClaw for gateway id on port, in its folder, with env.
func (d *Driver) start(id string, port int, env []string) (*proc, error) {
	dir := d.dir(id)
	logf, err := os.OpenFile(filepath.Join(dir, "gateway.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(d.cfg.OpenClaw, "gateway", "run", "--port", strconv.Itoa(port))
	cmd.Dir, cmd.Env = dir, env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start openclaw: %w", err)
	}
	p := &proc{id: id, pid: cmd.Process.Pid, cmd: cmd, done: make(chan struct{})}
	d.mu.Lock()
	d.procs[id] = p
	d.mu.Unlock()
	go func() { d.exited(p, cmd.Wait()) }()
	return p, nil
}

// stop ends p: SIGTERM to its process group, SIGKILL after StopTimeout (or when ctx ends),
// then SIGKILL to any process still working in the gateway's folder.
func (d *Driver) stop(ctx context.Context, p *proc) error {
	p.stopping.Store(true)
	if p.alive() {
		_ = syscall.Kill(-p.pid, syscall.SIGTERM)
		t := time.NewTimer(d.cfg.StopTimeout)
		select {
		case <-p.done:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		return fmt.Errorf("process %d of %s did not exit after SIGKILL", p.pid, p.id)
	}
	d.mu.Lock()
	if d.procs[p.id] == p {
		delete(d.procs, p.id)
	}
	d.mu.Unlock()
	return d.killStrays(p.id)
}

// stopAll stops gateway id's process, found by its folder, and anything else working there.
func (d *Driver) stopAll(ctx context.Context, id string) error {
	if p := d.find(id); p != nil {
		if err := d.stop(ctx, p); err != nil {
			return err
		}
	}
	return d.killStrays(id)
}

// killStrays kills whatever still works in gateway id's folder (children a dead leader left).
func (d *Driver) killStrays(id string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		leader, others := findProcs(d.dir(id))
		if leader == 0 && len(others) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes still running in %s: %v %v", d.dir(id), leader, others)
		}
		for _, pid := range append(others, leader) {
			if pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePort returns a loopback port that was free a moment ago; want, if free, is preferred
// (a restarted gateway keeps its address, so the registry need not change).
func freePort(want int) (int, error) {
	if want > 0 {
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(want)); err == nil {
			l.Close()
			return want, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}
