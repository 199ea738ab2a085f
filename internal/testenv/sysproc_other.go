//go:build unix && !linux

package testenv

import "syscall"

// sysProcAttr puts the child in its own process group, so stopping it also
// stops its helpers.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
