package flytest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	fly "github.com/superfly/fly-go"
	"github.com/superfly/fly-go/flaps"
)

// Counts are the live resources in the fake: apps, volumes not being destroyed, IP
// assignments, machines not destroyed, secrets and unexpired leases.
type Counts struct {
	Apps, Volumes, IPs, Machines, Secrets, Leases int
}

// Counts counts the live resources of every app.
func (s *Server) Counts() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	var c Counts
	for _, a := range s.apps {
		c.add(s.countApp(a))
	}
	return c
}

// AppCounts counts the live resources of one app (Apps is 0 or 1).
func (s *Server) AppCounts(name string) Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	if a := s.apps[name]; a != nil {
		return s.countApp(a)
	}
	return Counts{}
}

func (c *Counts) add(o Counts) {
	c.Apps += o.Apps
	c.Volumes += o.Volumes
	c.IPs += o.IPs
	c.Machines += o.Machines
	c.Secrets += o.Secrets
	c.Leases += o.Leases
}

// countApp counts one app. Callers hold s.mu.
func (s *Server) countApp(a *app) Counts {
	c := Counts{Apps: 1, IPs: len(a.ips), Secrets: len(a.secrets)}
	for _, v := range a.volumes {
		if liveVolume(v) {
			c.Volumes++
		}
	}
	for _, m := range a.machines {
		if m.live() {
			c.Machines++
		}
		if s.activeLease(m) != nil {
			c.Leases++
		}
	}
	return c
}

// Calls is how many requests reached route, faulted ones included.
func (s *Server) Calls(route Route) int { return s.api.Calls(route) }

// SeedApp creates an app as if someone had: org other than Config.Org makes a name another
// organization holds.
func (s *Server) SeedApp(name, org string) error {
	if !appNameRE.MatchString(name) || org == "" {
		return fmt.Errorf("flytest: seed app %q in %q: invalid name or empty org", name, org)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.apps[name] != nil {
		return fmt.Errorf("flytest: seed app %q: exists", name)
	}
	s.apps[name] = s.newApp(name, org)
	s.broadcast()
	return nil
}

// HoldLease makes another holder take the lease of a machine for ttl, as a concurrent
// process would: acquires and unleased mutations are refused until it expires (Advance) or
// is released with the returned nonce.
func (s *Server) HoldLease(appName, machineID string, ttl time.Duration) (nonce string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.apps[appName]
	if a == nil {
		return "", fmt.Errorf("flytest: hold lease: no app %q", appName)
	}
	i := slices.IndexFunc(a.machines, func(m *machine) bool { return m.id == machineID && m.live() })
	if i < 0 {
		return "", fmt.Errorf("flytest: hold lease: no machine %q in %q", machineID, appName)
	}
	m := a.machines[i]
	if s.activeLease(m) != nil {
		return "", errors.New("flytest: hold lease: already held")
	}
	m.lease = s.newLease(ttl, "held by a test")
	m.lease.owner = "other@example.test"
	return m.lease.nonce, nil
}

// Advance moves the server's clock forward: leases expire and machine steps fall due.
func (s *Server) Advance(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offset += d
	s.advance()
	s.broadcast()
}

// HoldBoot, while hold is true, keeps booting machines in "starting": waits for "started"
// answer 408 after their bound. Releasing lets them start.
func (s *Server) HoldBoot(hold bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bootHold = hold
	s.advance()
	s.broadcast()
}

// FailImage makes every machine that boots image (exactly as in its config) end in state
// "failed" instead of "started", as a machine whose image cannot be pulled does.
func (s *Server) FailImage(image string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failImages[image] = true
}

// Machines returns the live machines of an app, as the API shows them.
func (s *Server) Machines(appName string) []fly.Machine {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	var out []fly.Machine
	if a := s.apps[appName]; a != nil {
		for _, m := range a.machines {
			if m.live() {
				out = append(out, s.machineJSON(m))
			}
		}
	}
	return out
}

// MachineSecretsVersion is the app secrets version a machine last booted with.
func (s *Server) MachineSecretsVersion(appName, machineID string) (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.apps[appName]; a != nil {
		for _, m := range a.machines {
			if m.id == machineID {
				return m.secretsVersion, true
			}
		}
	}
	return 0, false
}

// Volumes returns the live volumes of an app.
func (s *Server) Volumes(appName string) []fly.Volume {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	var out []fly.Volume
	if a := s.apps[appName]; a != nil {
		for _, v := range a.volumes {
			if liveVolume(v) {
				out = append(out, *v)
			}
		}
	}
	return out
}

// IPs returns the IP assignments of an app.
func (s *Server) IPs(appName string) []flaps.IPAssignment {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.apps[appName]; a != nil {
		return slices.Clone(a.ips)
	}
	return nil
}

// SecretValues returns an app's secrets, values included, and its secrets version.
func (s *Server) SecretValues(appName string) (map[string]string, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.apps[appName]
	if a == nil {
		return nil, 0
	}
	out := make(map[string]string, len(a.secrets))
	for n, sec := range a.secrets {
		out[n] = sec.value
	}
	return out, a.secretsVersion
}

// UniformLatency returns a Config.Latency drawing each request's delay uniformly from
// [lo, hi], from a generator seeded with seed (safe for concurrent use).
func UniformLatency(lo, hi time.Duration, seed uint64) func() time.Duration {
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return func() time.Duration {
		if hi <= lo {
			return lo
		}
		mu.Lock()
		defer mu.Unlock()
		return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
	}
}
