package flytest

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	fly "github.com/superfly/fly-go"
)

// Machine states the fake enters.
const (
	stateCreated    = "created"
	stateStarting   = "starting"
	stateStarted    = "started"
	stateStopping   = "stopping"
	stateStopped    = "stopped"
	stateDestroying = "destroying"
	stateDestroyed  = "destroyed"
	stateFailed     = "failed"
)

// NonceHeader carries a lease's nonce on requests made under it.
const NonceHeader = "fly-machine-lease-nonce"

// machine is one machine. A destroyed machine stays, in state "destroyed", for GET and
// wait, and is left out of lists and counts.
type machine struct {
	app              string
	id, name, region string
	state            string
	instanceID       string
	config           *fly.MachineConfig
	secretsVersion   uint64
	created, updated time.Time
	steps            []step // pending state changes, in order
	lease            *lease
}

// okBody is the answer of stop, destroy and a satisfied wait.
type okBody struct {
	OK bool `json:"ok"`
}

// step is a state a machine enters at a time on the server's clock.
type step struct {
	state string
	at    time.Time
}

type lease struct {
	nonce, owner, description string
	expires                   time.Time
	version                   string
}

func (m *machine) live() bool { return m.state != stateDestroyed }

// running reports a state that needs kill=true to destroy and a stop before a restart.
func (m *machine) running() bool {
	return m.state == stateStarting || m.state == stateStarted
}

// schedule replaces the machine's pending steps: states, one StepDelay apart from now.
// Callers hold s.mu.
func (s *Server) schedule(m *machine, states ...string) {
	now := s.now()
	m.steps = m.steps[:0]
	for i, st := range states {
		m.steps = append(m.steps, step{state: st, at: now.Add(time.Duration(i+1) * s.cfg.StepDelay)})
	}
	m.updated = now
}

// advance applies every due step of every machine. A machine does not reach "started"
// while boots are held, and a machine booting a failing image ends "failed". Callers hold
// s.mu.
func (s *Server) advance() {
	now, changed := s.now(), false
	for _, a := range s.apps {
		for _, m := range a.machines {
			for len(m.steps) > 0 && !m.steps[0].at.After(now) {
				next := m.steps[0].state
				if next == stateStarted && s.bootHold {
					break
				}
				m.steps = m.steps[1:]
				if next == stateStarted && s.failImages[m.config.Image] {
					next, m.steps = stateFailed, nil
				}
				m.state, m.updated, changed = next, now, true
				if next == stateDestroyed {
					detach(a, m.id, nil)
					m.lease = nil
				}
			}
		}
	}
	if changed {
		s.broadcast()
	}
}

// detach frees the volumes attached to machine id except those in keep.
func detach(a *app, id string, keep []string) {
	for _, v := range a.volumes {
		if v.AttachedMachine != nil && *v.AttachedMachine == id && !slices.Contains(keep, v.ID) {
			v.AttachedMachine = nil
		}
	}
}

// attach checks that every mount names a live volume of the app, free or already this
// machine's, then attaches them. It reports false after answering.
func attach(w http.ResponseWriter, a *app, id string, cfg *fly.MachineConfig) bool {
	var vols []string
	for _, mt := range cfg.Mounts {
		v := findVolume(a, mt.Volume)
		switch {
		case v == nil || !liveVolume(v):
			writeError(w, http.StatusBadRequest, fmt.Sprintf("volume %q not found", mt.Volume))
			return false
		case v.AttachedMachine != nil && *v.AttachedMachine != id:
			writeCodedError(w, http.StatusPreconditionFailed, "failed_precondition",
				fmt.Sprintf("volume %s is already attached to machine %s", v.ID, *v.AttachedMachine))
			return false
		}
		vols = append(vols, v.ID)
	}
	detach(a, id, vols)
	for _, vid := range vols {
		mid := id
		findVolume(a, vid).AttachedMachine = &mid
	}
	return true
}

func (s *Server) machineJSON(m *machine) fly.Machine {
	out := fly.Machine{
		ID:         m.id,
		Name:       m.name,
		State:      m.state,
		Region:     m.region,
		ImageRef:   imageRef(m.config.Image),
		InstanceID: m.instanceID,
		PrivateIP:  fmt.Sprintf("fdaa:0:1:a7b:%s::2", m.id[len(m.id)-4:]),
		CreatedAt:  m.created.UTC().Format(time.RFC3339),
		UpdatedAt:  m.updated.UTC().Format(time.RFC3339),
		Config:     cloneConfig(m.config),
		HostStatus: fly.HostStatusOk,
	}
	names := make([]string, 0, len(m.config.Checks))
	for name := range m.config.Checks {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		updated := m.updated.UTC()
		out.Checks = append(out.Checks, s.checkStatus(m, name, &updated))
	}
	return out
}

// imageRef splits registry/repository:tag@digest as Fly reports it.
func imageRef(image string) fly.MachineImageRef {
	var ref fly.MachineImageRef
	rest, dgst, _ := strings.Cut(image, "@")
	ref.Digest = dgst
	if i := strings.LastIndex(rest, ":"); i > strings.LastIndex(rest, "/") {
		rest, ref.Tag = rest[:i], rest[i+1:]
	}
	first, path, ok := strings.Cut(rest, "/")
	if ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		ref.Registry, ref.Repository = first, path
	} else {
		ref.Registry, ref.Repository = "docker.io", rest
		if !ok {
			ref.Repository = "library/" + rest
		}
	}
	return ref
}

func cloneConfig(c *fly.MachineConfig) *fly.MachineConfig {
	b, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("flytest: machine config does not encode: %v", err)) // a fake's own bug
	}
	var out fly.MachineConfig
	_ = json.Unmarshal(b, &out)
	return &out
}

// findMachine finds the machine in the path, destroyed ones included, answering 404 when
// there is none. Callers hold s.mu.
func findMachine(w http.ResponseWriter, r *http.Request, a *app) (*machine, bool) {
	id := r.PathValue("id")
	i := slices.IndexFunc(a.machines, func(m *machine) bool { return m.id == id })
	if i < 0 {
		writeError(w, http.StatusNotFound, "machine not found")
		return nil, false
	}
	return a.machines[i], true
}

// machineFor is ourApp then findMachine, after applying due state changes. Callers hold
// s.mu.
func (s *Server) machineFor(w http.ResponseWriter, r *http.Request) (*app, *machine, bool) {
	a, ok := s.ourApp(w, r)
	if !ok {
		return nil, nil, false
	}
	s.advance()
	m, ok := findMachine(w, r, a)
	return a, m, ok
}

// activeLease returns the machine's unexpired lease, dropping an expired one. Callers
// hold s.mu.
func (s *Server) activeLease(m *machine) *lease {
	if m.lease != nil && !m.lease.expires.After(s.now()) {
		m.lease = nil
	}
	return m.lease
}

// leaseRefuses answers 409 to a mutation without the nonce of the machine's held lease.
func (s *Server) leaseRefuses(w http.ResponseWriter, r *http.Request, m *machine) bool {
	l := s.activeLease(m)
	if l == nil || r.Header.Get(NonceHeader) == l.nonce {
		return false
	}
	writeCodedError(w, http.StatusConflict, "lease_mismatch",
		"machine "+m.id+" is leased by "+l.owner+": present its nonce in "+NonceHeader)
	return true
}

// refuseDestroyed answers 412 to a mutation of a machine being or already destroyed.
func refuseDestroyed(w http.ResponseWriter, m *machine) bool {
	if m.state != stateDestroying && m.state != stateDestroyed {
		return false
	}
	writeCodedError(w, http.StatusPreconditionFailed, "failed_precondition",
		"unable to modify machine from current state: '"+m.state+"'")
	return true
}

// checkMinSecrets answers 412 when a launch or update wants secrets the app does not have.
func checkMinSecrets(w http.ResponseWriter, a *app, min *uint64) bool {
	if min == nil || *min <= a.secretsVersion {
		return true
	}
	writeCodedError(w, http.StatusPreconditionFailed, "failed_precondition",
		fmt.Sprintf("min_secrets_version %d is newer than the app's secrets version %d", *min, a.secretsVersion))
	return false
}

func (s *Server) listMachines(w http.ResponseWriter, r *http.Request, a *app) {
	withDeleted := r.URL.Query().Get("include_deleted") == "true"
	out := make([]fly.Machine, 0, len(a.machines))
	for _, m := range a.machines {
		if m.live() || withDeleted {
			out = append(out, s.machineJSON(m))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// launch creates a machine in state "created", then boots it: starting, then started
// (unless skip_launch). With lease_ttl the machine is created under a lease whose nonce
// the response carries.
func (s *Server) launch(w http.ResponseWriter, r *http.Request, a *app) {
	in, ok := decodeLaunch(w, r)
	if !ok {
		return
	}
	if in.Name != "" && slices.ContainsFunc(a.machines, func(m *machine) bool {
		return m.name == in.Name && m.state != stateDestroyed && m.state != stateDestroying
	}) {
		writeCodedError(w, http.StatusConflict, "already_exists",
			fmt.Sprintf("a machine named %q already exists in app %s", in.Name, a.name))
		return
	}
	if !checkMinSecrets(w, a, in.MinSecretsVersion) {
		return
	}
	n := s.nextID()
	now := s.now()
	m := &machine{
		app:            a.name,
		id:             fmt.Sprintf("e784%010x", n),
		name:           in.Name,
		region:         in.Region,
		state:          stateCreated,
		instanceID:     fmt.Sprintf("01J%023X", n),
		config:         cloneConfig(in.Config),
		secretsVersion: a.secretsVersion,
		created:        now,
		updated:        now,
	}
	if m.name == "" {
		m.name = "machine-" + m.id
	}
	if m.region == "" {
		m.region = "iad"
	}
	if !attach(w, a, m.id, m.config) {
		return
	}
	a.machines = append(a.machines, m)
	out := s.machineJSON(m)
	if in.LeaseTTL > 0 {
		m.lease = s.newLease(time.Duration(in.LeaseTTL)*time.Second, "")
		out.LeaseNonce = m.lease.nonce
	}
	if !in.SkipLaunch {
		s.schedule(m, stateStarting, stateStarted)
	}
	s.broadcast()
	writeJSON(w, http.StatusOK, out)
}

// decodeLaunch reads the body of a launch or an update, which must name an image.
func decodeLaunch(w http.ResponseWriter, r *http.Request) (fly.LaunchMachineInput, bool) {
	var in fly.LaunchMachineInput
	if !decode(w, r, &in) {
		return in, false
	}
	if in.Config == nil || in.Config.Image == "" {
		writeError(w, http.StatusBadRequest, "config.image is required")
		return in, false
	}
	return in, true
}

func (s *Server) getMachine(w http.ResponseWriter, _ *http.Request, _ *app, m *machine) {
	writeJSON(w, http.StatusOK, s.machineJSON(m))
}

// updateMachine replaces the machine's config and mints a new instance: a running machine
// stops and starts again on it, a stopped one starts (unless skip_launch).
func (s *Server) updateMachine(w http.ResponseWriter, r *http.Request, a *app, m *machine) {
	in, ok := decodeLaunch(w, r)
	if !ok {
		return
	}
	if s.leaseRefuses(w, r, m) || refuseDestroyed(w, m) || !checkMinSecrets(w, a, in.MinSecretsVersion) {
		return
	}
	cfg := cloneConfig(in.Config)
	if !attach(w, a, m.id, cfg) {
		return
	}
	m.config, m.secretsVersion = cfg, a.secretsVersion
	m.instanceID = fmt.Sprintf("01J%023X", s.nextID())
	switch {
	case m.running() && in.SkipLaunch:
		m.state = stateStopping
		s.schedule(m, stateStopped)
	case m.running():
		m.state = stateStopping
		s.schedule(m, stateStopped, stateStarting, stateStarted)
	case !in.SkipLaunch:
		m.state = stateStarting
		s.schedule(m, stateStarted)
	default:
		s.schedule(m)
	}
	s.broadcast()
	writeJSON(w, http.StatusOK, s.machineJSON(m))
}

func (s *Server) startMachine(w http.ResponseWriter, r *http.Request, _ *app, m *machine) {
	if s.leaseRefuses(w, r, m) || refuseDestroyed(w, m) {
		return
	}
	prev := m.state
	if !m.running() {
		m.state = stateStarting
		s.schedule(m, stateStarted)
		s.broadcast()
	}
	writeJSON(w, http.StatusOK, fly.MachineStartResponse{Status: "ok", PreviousState: prev})
}

func (s *Server) stopMachine(w http.ResponseWriter, r *http.Request, _ *app, m *machine) {
	var in fly.StopMachineInput
	if !decode(w, r, &in) {
		return
	}
	if s.leaseRefuses(w, r, m) || refuseDestroyed(w, m) {
		return
	}
	if m.running() {
		m.state = stateStopping
		s.schedule(m, stateStopped)
		s.broadcast()
	}
	writeJSON(w, http.StatusOK, okBody{OK: true})
}

// destroyMachine destroys a machine; a running one only with kill=true, as on Fly.
func (s *Server) destroyMachine(w http.ResponseWriter, r *http.Request, _ *app, m *machine) {
	if s.leaseRefuses(w, r, m) {
		return
	}
	switch {
	case m.state == stateDestroyed:
		writeError(w, http.StatusNotFound, "machine not found")
		return
	case m.state == stateDestroying:
	case (m.running() || m.state == stateStopping) && r.URL.Query().Get("kill") != "true":
		writeCodedError(w, http.StatusPreconditionFailed, "failed_precondition",
			"unable to destroy machine, not currently stopped: use kill=true")
		return
	default:
		m.state, m.lease = stateDestroying, nil
		s.schedule(m, stateDestroyed)
		s.broadcast()
	}
	writeJSON(w, http.StatusOK, okBody{OK: true})
}

// wait answers 200 once the machine is in one of the wanted states (and at the wanted
// instance, with version=), or 408 after min(timeout, MaxWait).
func (s *Server) wait(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	states := q["state"]
	if len(states) == 0 {
		states = []string{stateStarted}
	}
	version := q.Get("version")
	if version == "" {
		version = q.Get("instance_id")
	}
	bound := min(clampWait(q.Get("timeout")), s.cfg.MaxWait)
	deadline := time.NewTimer(bound)
	defer deadline.Stop()
	poll := time.NewTicker(10 * time.Millisecond) // the server's clock may be moved by Advance
	defer poll.Stop()
	for {
		s.mu.Lock()
		_, m, ok := s.machineFor(w, r)
		if !ok {
			s.mu.Unlock()
			return
		}
		done := slices.Contains(states, m.state) && (version == "" || version == m.instanceID)
		state, changed := m.state, s.changed
		s.mu.Unlock()
		if done {
			writeJSON(w, http.StatusOK, okBody{OK: true})
			return
		}
		select {
		case <-changed:
		case <-poll.C:
		case <-deadline.C:
			writeCodedError(w, http.StatusRequestTimeout, "deadline_exceeded",
				"timeout waiting for machine to be "+strings.Join(states, "|")+"; it is "+state)
			return
		case <-r.Context().Done():
			return
		case <-s.api.Closed():
			return
		}
	}
}

// clampWait reads wait's timeout in seconds, clamped to [1 s, 60 s] as Fly does.
func clampWait(raw string) time.Duration {
	secs, err := strconv.Atoi(raw)
	if raw == "" {
		secs, err = 60, nil
	}
	if err != nil {
		secs = 1
	}
	return time.Duration(min(max(secs, 1), 60)) * time.Second
}

// newLease makes a lease held by the caller. Callers hold s.mu.
func (s *Server) newLease(ttl time.Duration, description string) *lease {
	if ttl <= 0 {
		ttl = s.cfg.LeaseTTL
	}
	return &lease{
		nonce:       rand.Text(),
		owner:       s.cfg.Owner,
		description: description,
		expires:     s.now().Add(ttl),
		version:     fmt.Sprintf("%016x", s.nextID()),
	}
}

func leaseJSON(l *lease, withNonce bool) fly.MachineLease {
	d := &fly.MachineLeaseData{ExpiresAt: l.expires.Unix(), Owner: l.owner, Version: l.version}
	if withNonce {
		d.Nonce = l.nonce
	}
	return fly.MachineLease{Status: "success", Data: d}
}

// writeLeaseHeld answers an acquire refused because another holder has the lease. The
// holder's nonce is never told.
func writeLeaseHeld(w http.ResponseWriter, owner string, expires time.Time) {
	writeCodedError(w, http.StatusConflict, "lease_currently_held",
		"machine lease currently held by "+owner+" until "+expires.UTC().Format(time.RFC3339))
}

// getLease reports the held lease, without its nonce.
func (s *Server) getLease(w http.ResponseWriter, r *http.Request, _ *app, m *machine) {
	l := s.activeLease(m)
	if l == nil {
		writeError(w, http.StatusNotFound, "no active lease")
		return
	}
	writeJSON(w, http.StatusOK, leaseJSON(l, false))
}

// acquireLease takes a lease (no nonce header) or refreshes the caller's (its nonce in the
// header), for ttl seconds.
func (s *Server) acquireLease(w http.ResponseWriter, r *http.Request, _ *app, m *machine) {
	var in struct {
		Description string `json:"description"`
		TTL         int    `json:"ttl"`
	}
	if !decode(w, r, &in) {
		return
	}
	ttl := time.Duration(in.TTL) * time.Second
	if raw := r.URL.Query().Get("ttl"); raw != "" {
		secs, err := strconv.Atoi(raw)
		if err != nil || secs <= 0 {
			writeError(w, http.StatusBadRequest, "ttl must be a positive number of seconds")
			return
		}
		ttl = time.Duration(secs) * time.Second
	}
	if refuseDestroyed(w, m) {
		return
	}
	l := s.activeLease(m)
	if nonce := r.Header.Get(NonceHeader); nonce != "" {
		if l == nil || l.nonce != nonce {
			writeCodedError(w, http.StatusConflict, "lease_mismatch", "lease expired or held by another: refresh refused")
			return
		}
		if ttl <= 0 {
			ttl = s.cfg.LeaseTTL
		}
		l.expires = s.now().Add(ttl)
		writeJSON(w, http.StatusOK, leaseJSON(l, true))
		return
	}
	if l != nil {
		writeLeaseHeld(w, l.owner, l.expires)
		return
	}
	m.lease = s.newLease(ttl, in.Description)
	s.broadcast()
	writeJSON(w, http.StatusOK, leaseJSON(m.lease, true))
}

func (s *Server) releaseLease(w http.ResponseWriter, r *http.Request, _ *app, m *machine) {
	l := s.activeLease(m)
	switch {
	case l == nil:
		writeError(w, http.StatusNotFound, "no active lease")
	case l.nonce != r.Header.Get(NonceHeader):
		writeCodedError(w, http.StatusConflict, "lease_mismatch", "lease nonce does not match")
	default:
		m.lease = nil
		s.broadcast()
		writeJSON(w, http.StatusOK, fly.MachineLease{Status: "success"})
	}
}
