package local

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// sysProcAttr puts a gateway in a process group of its own, so a stop reaches its helpers
// too, and has the kernel kill it when moltgate dies: no 1 GB gateway outlives its proxy.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// findProcs returns the process group leader working in dir (0 if none) and the other
// processes working there: the lookup of a gateway's process by its deterministic name.
func findProcs(dir string) (leader int, others []int) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, nil
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || !sameDir(pid, dir) {
			continue
		}
		if pgid, err := syscall.Getpgid(pid); err == nil && pgid == pid && leader == 0 {
			leader = pid
		} else {
			others = append(others, pid)
		}
	}
	return leader, others
}

// sameDir reports whether process pid works in dir.
func sameDir(pid int, dir string) bool {
	cwd, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "cwd"))
	return err == nil && strings.TrimSuffix(cwd, " (deleted)") == dir
}
