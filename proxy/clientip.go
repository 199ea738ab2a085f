package proxy

import (
	"net/http"
	"net/netip"
	"strings"
)

// ClientIP returns the address of the client. Forwarding headers are believed only from a
// peer in trusted: from anyone else they are attacker-controlled and ignored. From a trusted
// peer, CF-Connecting-IP wins; else the right-most X-Forwarded-For entry that is not itself
// a trusted proxy (entries to its left could have been written by the client).
func ClientIP(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	ip := peer.Addr().Unmap()
	if !contains(trusted, ip) {
		return ip
	}
	if v := r.Header.Values("Cf-Connecting-Ip"); len(v) == 1 {
		if a, err := netip.ParseAddr(strings.TrimSpace(v[0])); err == nil {
			return a.Unmap()
		}
	}
	xff := r.Header.Values("X-Forwarded-For")
	for i := len(xff) - 1; i >= 0; i-- {
		hops := xff[i]
		for hops != "" {
			var hop string
			if j := strings.LastIndexByte(hops, ','); j >= 0 {
				hop, hops = hops[j+1:], hops[:j]
			} else {
				hop, hops = hops, ""
			}
			a, err := netip.ParseAddr(strings.TrimSpace(hop))
			if err != nil {
				// A malformed hop ends the walk: nothing left of it can be trusted.
				return ip
			}
			a = a.Unmap()
			if !contains(trusted, a) {
				return a
			}
			ip = a
		}
	}
	return ip
}

func contains(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientCountry returns Cloudflare's CF-IPCountry for the policy, from a peer in trusted
// only: anyone else could claim any country. A value that is not two ASCII letters or
// digits, or a repeated header, gives "".
func ClientCountry(r *http.Request, trusted []netip.Prefix) string {
	v := r.Header.Values("Cf-Ipcountry")
	if len(v) != 1 || len(v[0]) != 2 || !contains(trusted, peerAddr(r)) {
		return ""
	}
	c := strings.ToUpper(v[0])
	for i := range 2 {
		if (c[i] < 'A' || c[i] > 'Z') && (c[i] < '0' || c[i] > '9') {
			return ""
		}
	}
	return c
}
