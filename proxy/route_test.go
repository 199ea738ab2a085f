package proxy

import (
	"bufio"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"testing"
)

// readTable reads a tab-separated testdata file, skipping comments and blank lines.
func readTable(t testing.TB, name string, cols int) [][]string {
	t.Helper()
	f, err := os.Open("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		row := strings.Split(line, "\t")
		if len(row) != cols {
			t.Fatalf("%s: %q: want %d tab-separated columns", name, line, cols)
		}
		rows = append(rows, row)
	}
	return rows
}

func TestGatewayID(t *testing.T) {
	tests := map[string]string{
		"gw1.gw.localhost":                        "gw1",
		"GW1.GW.LOCALHOST":                        "gw1",
		"gw1.gw.localhost:8080":                   "gw1",
		"gw1.gw.localhost.":                       "gw1",
		"gw1.gw.localhost.:8080":                  "gw1",
		"gw2.gw1.gw.localhost":                    "",
		"gw.localhost":                            "",
		".gw.localhost":                           "",
		"gw1.gw.localhost.evil.com":               "",
		"gw1.gw.localhost..":                      "",
		"-gw.gw.localhost":                        "",
		"gw_1.gw.localhost":                       "",
		"gw1%2egw.localhost":                      "",
		"gw1.gw.localhost@evil":                   "",
		"[::1]:8080":                              "",
		"":                                        "",
		"gw1.xgw.localhost":                       "",
		strings.Repeat("a", 64) + ".gw.localhost": "",
	}
	for host, want := range tests {
		if got := gatewayID(host, "gw.localhost"); got != want {
			t.Errorf("gatewayID(%q): got %q, want %q", host, got, want)
		}
	}
}

func TestNormalizePath(t *testing.T) {
	for _, row := range readTable(t, "paths.txt", 2) {
		u, err := url.ParseRequestURI(row[0])
		if err != nil {
			if row[1] != "!" {
				t.Errorf("%q: unparseable but expected %q", row[0], row[1])
			}
			continue
		}
		got, err := normalizePath(u)
		switch {
		case row[1] == "!" && err == nil:
			t.Errorf("normalizePath(%q): got %q, want refused", row[0], got)
		case row[1] != "!" && (err != nil || escapePath(got) != row[1]):
			t.Errorf("normalizePath(%q): got %q (%v), want %q", row[0], escapePath(got), err, row[1])
		}
	}
}

// FuzzNormalizePath: a normalised path is absolute, clean, has no dot segments or doubled
// slashes, and normalising it again changes nothing.
func FuzzNormalizePath(f *testing.F) {
	for _, row := range readTable(f, "paths.txt", 2) {
		f.Add(row[0])
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.ParseRequestURI(raw)
		if err != nil {
			return
		}
		p, err := normalizePath(u)
		if err != nil {
			return
		}
		if !strings.HasPrefix(p, "/") || strings.Contains(p, "//") || strings.Contains(p, "\\") {
			t.Fatalf("%q → %q", raw, p)
		}
		for seg := range strings.SplitSeq(p, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("%q → %q keeps a dot segment", raw, p)
			}
		}
		u2, err := url.ParseRequestURI(escapePath(p))
		if err != nil {
			t.Fatalf("%q → %q does not parse again: %v", raw, p, err)
		}
		if p2, err := normalizePath(u2); err != nil || p2 != p {
			t.Fatalf("not idempotent: %q → %q → %q (%v)", raw, p, p2, err)
		}
	})
}

var testTrusted = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}

func ipRequest(peer, cf, xff string) *http.Request {
	r := &http.Request{RemoteAddr: peer, Header: http.Header{}}
	if cf != "-" {
		r.Header.Set("CF-Connecting-IP", cf)
	}
	if xff != "-" {
		r.Header.Set("X-Forwarded-For", xff)
	}
	return r
}

func TestClientIP(t *testing.T) {
	for _, row := range readTable(t, "clientip.txt", 4) {
		got := ClientIP(ipRequest(row[0], row[1], row[2]), testTrusted)
		want := row[3]
		if want == "invalid" {
			if got.IsValid() {
				t.Errorf("%v: got %v, want invalid", row, got)
			}
			continue
		}
		if got.String() != want {
			t.Errorf("%v: got %v, want %s", row, got, want)
		}
	}
	// No trusted proxies: headers never count.
	if got := ClientIP(ipRequest("10.0.0.1:1", "1.2.3.4", "5.6.7.8"), nil); got.String() != "10.0.0.1" {
		t.Errorf("untrusted peer: got %v", got)
	}
}

// FuzzClientIP: from an untrusted peer the answer is always the peer, whatever the headers;
// from a trusted one it is the peer or an address that appears in a header.
func FuzzClientIP(f *testing.F) {
	for _, row := range readTable(f, "clientip.txt", 4) {
		f.Add(row[0], row[1], row[2])
	}
	f.Fuzz(func(t *testing.T, peer, cf, xff string) {
		r := ipRequest(peer, cf, xff)
		got := ClientIP(r, testTrusted)
		ap, err := netip.ParseAddrPort(peer)
		if err != nil {
			if got.IsValid() {
				t.Fatalf("invalid peer %q gave %v", peer, got)
			}
			return
		}
		p := ap.Addr().Unmap()
		if !contains(testTrusted, p) && got != p {
			t.Fatalf("untrusted peer %v: headers cf=%q xff=%q changed the client to %v", p, cf, xff, got)
		}
		if got == p {
			return
		}
		for s := range strings.SplitSeq(cf+","+xff, ",") {
			if a, err := netip.ParseAddr(strings.TrimSpace(s)); err == nil && a.Unmap() == got {
				return
			}
		}
		t.Fatalf("client %v appears in no header (cf=%q xff=%q)", got, cf, xff)
	})
}
