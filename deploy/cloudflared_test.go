package deploy

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// tunnelConfig is a cloudflared config.yml, decoded strictly.
type tunnelConfig struct {
	Tunnel          string `json:"tunnel"`
	CredentialsFile string `json:"credentials-file"`
	Metrics         string `json:"metrics"`
	NoAutoupdate    bool   `json:"no-autoupdate"`
	Ingress         []struct {
		Hostname      string         `json:"hostname"`
		Path          string         `json:"path"`
		Service       string         `json:"service"`
		OriginRequest map[string]any `json:"originRequest"`
	} `json:"ingress"`
}

// tunnelProblems returns what is wrong with the ingress c in front of the Service svc (its
// in-cluster host and port) for gateway_domain domain: *.domain reaches the Service, nothing
// reaches moltgate's admin port, and the last rule refuses what no other rule took.
func tunnelProblems(c tunnelConfig, domain, svcHost string, svcPort, adminPort int32) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Tunnel == "" || c.CredentialsFile == "" {
		bad("want the tunnel's id and a credentials-file (its secret is mounted, never inlined)")
	}
	gateways := false
	for i, r := range c.Ingress {
		last := i == len(c.Ingress)-1
		if last != (r.Hostname == "") {
			bad("ingress[%d]: only the last rule has no hostname", i)
		}
		if strings.HasPrefix(r.Service, "http_status:") {
			continue
		}
		u, err := url.Parse(r.Service)
		if err != nil {
			bad("ingress[%d]: service %q: %v", i, r.Service, err)
			continue
		}
		p, _ := strconv.Atoi(u.Port())
		if strings.HasPrefix(u.Hostname(), strings.Split(svcHost, ".")[0]+".") && int32(p) == adminPort {
			bad("ingress[%d]: %s reaches moltgate's admin listener (metrics, admin API)", i, r.Service)
		}
		if r.Hostname == "*."+domain {
			gateways = u.Scheme == "http" && u.Hostname() == svcHost && int32(p) == svcPort && r.Path == ""
		}
	}
	if !gateways {
		bad("no rule sends *.%s, every path, to http://%s:%d", domain, svcHost, svcPort)
	}
	if n := len(c.Ingress); n == 0 || c.Ingress[n-1].Service != "http_status:404" {
		bad("the last rule must be service: http_status:404")
	}
	return errs
}

func readTunnel(t *testing.T, text string) (tunnelConfig, error) {
	t.Helper()
	var c tunnelConfig
	return c, decodeStrict([]byte(text), &c)
}

// tunnelTarget is what cloudflared must reach: the Service's cluster name and port, and the
// gateway domain and admin port of the ConfigMap's configuration.
func tunnelTarget(t *testing.T) (domain, host string, svcPort, adminPort int32) {
	t.Helper()
	k := readKube(t)
	cfg, _, _, err := parseConfig(k.configMap.Data["moltgate.yaml"])
	if err != nil {
		t.Fatal(err)
	}
	return cfg.GatewayDomain, k.service.Name + ".moltgate.svc.cluster.local", k.service.Spec.Ports[0].Port, port(cfg.AdminListen)
}

// The cloudflared example routes every gateway host to the moltgate Service and nothing to
// its admin listener.
func TestCloudflared(t *testing.T) {
	t.Parallel()
	data := readFile(t, "cloudflared/config.yml")
	c, err := readTunnel(t, string(data))
	if err != nil {
		t.Fatalf("cloudflared/config.yml: %v", err)
	}
	domain, host, svcPort, adminPort := tunnelTarget(t)
	for _, err := range tunnelProblems(c, domain, host, svcPort, adminPort) {
		t.Error(err)
	}
}

// Each cloudflared check refuses an ingress that breaks it.
func TestCloudflaredRefused(t *testing.T) {
	t.Parallel()
	data := readFile(t, "cloudflared/config.yml")
	good := string(data)
	domain, host, svcPort, adminPort := tunnelTarget(t)
	for name, c := range map[string]struct{ from, to string }{
		"another domain":    {`"*.gw.example.com"`, `"*.gateways.example.com"`},
		"the admin port":    {"service: http://moltgate.moltgate.svc.cluster.local:80", "service: http://moltgate.moltgate.svc.cluster.local:9090"},
		"no catch-all":      {"  - service: http_status:404\n", ""},
		"catch-all serves":  {"service: http_status:404", "service: http://moltgate.moltgate.svc.cluster.local:80"},
		"one path only":     {`  - hostname: "*.gw.example.com"`, "  - hostname: \"*.gw.example.com\"\n    path: ^/api"},
		"misspelt field":    {"originRequest:", "originrequest:"},
		"no credentials":    {"credentials-file: /etc/cloudflared/creds/credentials.json\n", ""},
		"admin by hostname": {"    service: http://dashboard.moltgate.svc.cluster.local:80", "    service: http://moltgate.moltgate.svc.cluster.local:9090"},
	} {
		t.Run(name, func(t *testing.T) {
			bad := strings.Replace(good, c.from, c.to, 1)
			if bad == good {
				t.Fatal("the mutation changed nothing")
			}
			cfg, err := readTunnel(t, bad)
			if err == nil && len(tunnelProblems(cfg, domain, host, svcPort, adminPort)) == 0 {
				t.Error("not refused")
			}
		})
	}
}
