//go:build !linux

package local

import "syscall"

// sysProcAttr puts a gateway in a process group of its own (Linux also ties its life to
// moltgate's).
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// findProcs finds nothing off Linux: only processes this driver started are known.
func findProcs(dir string) (leader int, others []int) { return 0, nil }

func sameDir(pid int, dir string) bool { return true }
