package flytest

import (
	"fmt"
	"net/http"
	"slices"

	"github.com/superfly/fly-go/flaps"
)

// sharedV4 is the one shared IPv4 address the fake hands out, as Fly hands every app of a
// region the same few.
const sharedV4 = "66.241.124.11"

func (s *Server) listIPs(w http.ResponseWriter, r *http.Request, a *app) {
	writeJSON(w, http.StatusOK, flaps.ListIPAssignmentsResponse{IPs: slices.Clone(a.ips)})
}

// assignIP allocates an address. Each call allocates one more: a retried create makes a
// second assignment.
func (s *Server) assignIP(w http.ResponseWriter, r *http.Request, a *app) {
	var req flaps.AssignIPRequest
	if !decode(w, r, &req) {
		return
	}
	n := s.nextID()
	ip := flaps.IPAssignment{Region: req.Region, ServiceName: req.ServiceName, CreatedAt: s.now().UTC()}
	switch req.Type {
	case "v6":
		ip.IP = fmt.Sprintf("2a09:8280:1::%x", n)
	case "shared_v4":
		if req.Region != "" {
			writeError(w, http.StatusBadRequest, "shared_v4 takes no region")
			return
		}
		ip.IP, ip.Shared = sharedV4, true
	case "private_v6":
		ip.IP = fmt.Sprintf("fdaa:0:1:a7b::%x", n)
	case "v4":
		ip.IP = fmt.Sprintf("137.66.%d.%d", (n>>8)&0xff, n&0xff)
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown ip type %q", req.Type))
		return
	}
	if ip.Region == "" {
		ip.Region = "global"
	}
	a.ips = append(a.ips, ip)
	s.broadcast()
	writeJSON(w, http.StatusOK, ip)
}

func (s *Server) deleteIP(w http.ResponseWriter, r *http.Request, a *app) {
	i := slices.IndexFunc(a.ips, func(ip flaps.IPAssignment) bool { return ip.IP == r.PathValue("ip") })
	if i < 0 {
		writeError(w, http.StatusNotFound, "ip assignment not found")
		return
	}
	a.ips = slices.Delete(a.ips, i, i+1)
	s.broadcast()
	w.WriteHeader(http.StatusNoContent)
}
