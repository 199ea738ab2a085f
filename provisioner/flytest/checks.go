package flytest

import (
	"time"

	fly "github.com/superfly/fly-go"
)

// checkFault names the machines whose health checks FailChecks fails: those running image,
// in app (every app when empty).
type checkFault struct{ image, app string }

// FailChecks makes the health checks of every machine running image (exactly as in its
// config) fail, in the given apps or, with none, in every app: the machine reaches
// "started" as usual, and its checks report "critical" with the output of a refused
// connection, as Fly reports a gateway that boots but does not answer. The driver's wait
// for health then runs out. It applies to machines already running image too.
func (s *Server) FailChecks(image string, apps ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failChecks == nil {
		s.failChecks = map[checkFault]bool{}
	}
	if len(apps) == 0 {
		s.failChecks[checkFault{image: image}] = true
	}
	for _, a := range apps {
		s.failChecks[checkFault{image: image, app: a}] = true
	}
	s.broadcast()
}

// checkStatus is check name of m as the machine JSON reports it: passing once started,
// critical before, or always when FailChecks names its image. Callers hold s.mu.
func (s *Server) checkStatus(m *machine, name string, updated *time.Time) *fly.MachineCheckStatus {
	img := m.config.Image
	failing := s.failChecks[checkFault{image: img}] || s.failChecks[checkFault{image: img, app: m.app}]
	switch {
	case m.state == stateStarted && !failing:
		return &fly.MachineCheckStatus{Name: name, Status: fly.Passing, Output: "Success", UpdatedAt: updated}
	case m.state == stateStarted:
		return &fly.MachineCheckStatus{Name: name, Status: fly.Critical, UpdatedAt: updated,
			Output: "dial tcp 127.0.0.1:18789: connect: connection refused"}
	}
	return &fly.MachineCheckStatus{Name: name, Status: fly.Critical, UpdatedAt: updated}
}
