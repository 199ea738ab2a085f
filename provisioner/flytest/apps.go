package flytest

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	fly "github.com/superfly/fly-go"
	"github.com/superfly/fly-go/flaps"
)

// app is one app and everything in it.
type app struct {
	id, name, org string
	num           int32
	created       time.Time

	volumes        []*fly.Volume
	ips            []flaps.IPAssignment
	secrets        map[string]*secret
	secretsVersion uint64
	machines       []*machine // in launch order, destroyed ones included
}

// appNameRE is Fly's rule for app names: lowercase letters, digits and dashes, one DNS
// label.
var appNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func (s *Server) newApp(name, org string) *app {
	n := s.nextID()
	return &app{
		id:      fmt.Sprintf("app_%06d", n),
		name:    name,
		org:     org,
		num:     int32(n),
		created: s.now(),
		secrets: map[string]*secret{},
	}
}

func (s *Server) appJSON(a *app) flaps.App {
	out := flaps.App{
		ID:                a.id,
		Name:              a.name,
		InternalNumericID: a.num,
		Network:           "default",
		Status:            "pending",
		Organization:      flaps.AppOrganizationInfo{Name: a.org, Slug: a.org, InternalNumericID: 1},
	}
	for _, m := range a.machines {
		if m.live() {
			out.MachineCount++
			out.Status = "deployed"
		}
	}
	for _, v := range a.volumes {
		if liveVolume(v) {
			out.VolumeCount++
		}
	}
	return out
}

// ourApp finds the app named in the path and checks that it belongs to the caller's
// organization, answering 404 or ForeignStatus when not. Callers hold s.mu.
func (s *Server) ourApp(w http.ResponseWriter, r *http.Request) (*app, bool) {
	a := s.apps[r.PathValue("app")]
	switch {
	case a == nil:
		writeError(w, http.StatusNotFound, "app not found")
		return nil, false
	case a.org != s.cfg.Org:
		writeError(w, s.cfg.ForeignStatus, "unauthorized")
		return nil, false
	}
	return a, true
}

func (s *Server) listApps(w http.ResponseWriter, r *http.Request) {
	org := r.URL.Query().Get("org_slug")
	if org != s.cfg.Org {
		writeError(w, http.StatusForbidden, "unauthorized")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out struct {
		TotalApps int         `json:"total_apps"`
		Apps      []flaps.App `json:"apps"`
	}
	out.Apps = []flaps.App{}
	for _, a := range s.sortedApps() {
		if a.org == org {
			out.Apps = append(out.Apps, s.appJSON(a))
		}
	}
	out.TotalApps = len(out.Apps)
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) createApp(w http.ResponseWriter, r *http.Request) {
	var req flaps.CreateAppRequest
	if !decode(w, r, &req) {
		return
	}
	switch {
	case req.Org == "":
		writeError(w, http.StatusBadRequest, "org_slug is required")
		return
	case req.Org != s.cfg.Org:
		writeError(w, http.StatusForbidden, "unauthorized")
		return
	case !appNameRE.MatchString(req.Name):
		writeError(w, http.StatusUnprocessableEntity, "Name is invalid: use lowercase letters, numbers and dashes")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, taken := s.apps[req.Name]; taken {
		// App names are global: the same answer whoever holds the name.
		writeError(w, http.StatusUnprocessableEntity, "Name has already been taken")
		return
	}
	a := s.newApp(req.Name, req.Org)
	s.apps[a.name] = a
	s.broadcast()
	writeJSON(w, http.StatusCreated, s.appJSON(a))
}

func (s *Server) getApp(w http.ResponseWriter, r *http.Request, a *app) {
	writeJSON(w, http.StatusOK, s.appJSON(a))
}

// deleteApp removes the app and all it holds, as Fly does.
func (s *Server) deleteApp(w http.ResponseWriter, r *http.Request, a *app) {
	delete(s.apps, a.name)
	s.broadcast()
	w.WriteHeader(http.StatusAccepted)
}

func (s *Server) sortedApps() []*app {
	out := make([]*app, 0, len(s.apps))
	for _, a := range s.apps {
		out = append(out, a)
	}
	slices.SortFunc(out, func(x, y *app) int { return strings.Compare(x.name, y.name) })
	return out
}
