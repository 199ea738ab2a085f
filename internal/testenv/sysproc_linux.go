package testenv

import "syscall"

// sysProcAttr puts the child in its own process group, so stopping it also
// stops its helpers, and has the kernel kill it if the test binary dies
// without running cleanups (a go test timeout, a crash): a leaked OpenClaw
// gateway holds 1 GB.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
