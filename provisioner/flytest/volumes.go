package flytest

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"

	fly "github.com/superfly/fly-go"
)

// volumeDestroyed is the state of a deleted volume: Fly keeps listing it for a while, and
// flaps' GetVolumes filters it out.
const volumeDestroyed = "scheduling_destroy"

// volumeNameRE is Fly's rule for volume names: letters, digits and underscores, at most 30.
var volumeNameRE = regexp.MustCompile(`^[A-Za-z0-9_]{1,30}$`)

func liveVolume(v *fly.Volume) bool { return v.State != volumeDestroyed }

func (s *Server) listVolumes(w http.ResponseWriter, r *http.Request, a *app) {
	out := make([]fly.Volume, 0, len(a.volumes))
	for _, v := range a.volumes {
		out = append(out, *v)
	}
	writeJSON(w, http.StatusOK, out)
}

// createVolume creates a volume. Names are not unique: a second create with the same name
// makes a second volume, as on Fly.
func (s *Server) createVolume(w http.ResponseWriter, r *http.Request, a *app) {
	var req fly.CreateVolumeRequest
	if !decode(w, r, &req) {
		return
	}
	switch {
	case !volumeNameRE.MatchString(req.Name):
		writeError(w, http.StatusBadRequest, "name must be 1 to 30 letters, digits or underscores")
		return
	case req.Region == "":
		writeError(w, http.StatusBadRequest, "region is required")
		return
	}
	v := &fly.Volume{
		ID:                fmt.Sprintf("vol_%016x", 0x4e5a000000000000+s.nextID()),
		Name:              req.Name,
		State:             "created",
		SizeGb:            1,
		Region:            req.Region,
		Zone:              req.Region + "-1",
		Encrypted:         req.Encrypted == nil || *req.Encrypted, // encrypted unless refused, as on Fly
		CreatedAt:         s.now().UTC(),
		SnapshotRetention: 5,
	}
	if req.SizeGb != nil {
		v.SizeGb = *req.SizeGb
	}
	a.volumes = append(a.volumes, v)
	s.broadcast()
	writeJSON(w, http.StatusOK, *v)
}

func (s *Server) getVolume(w http.ResponseWriter, r *http.Request, a *app) {
	v := findVolume(a, r.PathValue("vol"))
	if v == nil {
		writeError(w, http.StatusNotFound, "volume not found")
		return
	}
	writeJSON(w, http.StatusOK, *v)
}

// deleteVolume schedules a volume's destruction; an attached volume is refused.
func (s *Server) deleteVolume(w http.ResponseWriter, r *http.Request, a *app) {
	v := findVolume(a, r.PathValue("vol"))
	if v == nil {
		writeError(w, http.StatusNotFound, "volume not found")
		return
	}
	if v.AttachedMachine != nil {
		writeCodedError(w, http.StatusPreconditionFailed, "failed_precondition",
			fmt.Sprintf("volume %s is attached to machine %s: destroy the machine first", v.ID, *v.AttachedMachine))
		return
	}
	if v.State != volumeDestroyed {
		v.State = volumeDestroyed
		s.broadcast()
	}
	writeJSON(w, http.StatusOK, *v)
}

func findVolume(a *app, id string) *fly.Volume {
	i := slices.IndexFunc(a.volumes, func(v *fly.Volume) bool { return v.ID == id })
	if i < 0 {
		return nil
	}
	return a.volumes[i]
}
