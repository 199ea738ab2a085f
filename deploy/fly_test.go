package deploy

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// flyApp is the part of fly.toml these checks read; decodeFly refuses any key it lacks.
type flyApp struct {
	App           string `toml:"app"`
	PrimaryRegion string `toml:"primary_region"`
	KillSignal    string `toml:"kill_signal"`
	KillTimeout   string `toml:"kill_timeout"`
	Build         struct {
		Dockerfile string `toml:"dockerfile"`
	} `toml:"build"`
	Deploy struct {
		Strategy string `toml:"strategy"`
	} `toml:"deploy"`
	Env   map[string]string `toml:"env"`
	Files []struct {
		GuestPath string `toml:"guest_path"`
		LocalPath string `toml:"local_path"`
	} `toml:"files"`
	HTTPService struct {
		InternalPort       int    `toml:"internal_port"`
		ForceHTTPS         bool   `toml:"force_https"`
		AutoStopMachines   string `toml:"auto_stop_machines"`
		AutoStartMachines  bool   `toml:"auto_start_machines"`
		MinMachinesRunning int    `toml:"min_machines_running"`
		Concurrency        struct {
			Type      string `toml:"type"`
			SoftLimit int    `toml:"soft_limit"`
			HardLimit int    `toml:"hard_limit"`
		} `toml:"concurrency"`
	} `toml:"http_service"`
	Checks map[string]struct {
		Type        string `toml:"type"`
		Port        int    `toml:"port"`
		Method      string `toml:"method"`
		Path        string `toml:"path"`
		Interval    string `toml:"interval"`
		Timeout     string `toml:"timeout"`
		GracePeriod string `toml:"grace_period"`
	} `toml:"checks"`
	VM []struct {
		Size   string `toml:"size"`
		Memory string `toml:"memory"`
	} `toml:"vm"`
	Metrics struct {
		Port int    `toml:"port"`
		Path string `toml:"path"`
	} `toml:"metrics"`
}

// decodeFly decodes text strictly: a key flyApp does not know is an error.
func decodeFly(text string) (flyApp, error) {
	var f flyApp
	md, err := toml.Decode(text, &f)
	if err != nil {
		return f, err
	}
	if u := md.Undecoded(); len(u) > 0 {
		return f, fmt.Errorf("unknown keys %v", u)
	}
	return f, nil
}

// flyProblems returns what is wrong with fly.toml f for the moltgate configuration cfg: the
// service on the proxy port, checks of /healthz and /readyz on the admin port, a kill
// timeout above moltgate's drain, the configuration written where the image reads it, and no
// secret among the plain environment.
func flyProblems(f flyApp, cfg moltgateConfig) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if int32(f.HTTPService.InternalPort) != port(cfg.Listen) {
		bad("http_service.internal_port %d, want listen's port %d", f.HTTPService.InternalPort, port(cfg.Listen))
	}
	if f.HTTPService.MinMachinesRunning < 2 || f.HTTPService.AutoStopMachines != "off" {
		bad("http_service: want at least 2 machines always running (sockets live on them)")
	}
	paths := map[string]bool{}
	for name, c := range f.Checks {
		if c.Type != "http" || int32(c.Port) != port(cfg.AdminListen) || strings.ToUpper(c.Method) != "GET" {
			bad("checks.%s: want an http GET on the admin port %d", name, port(cfg.AdminListen))
		}
		paths[c.Path] = true
	}
	if !paths["/healthz"] || !paths["/readyz"] || len(paths) != 2 {
		bad("checks on %v: want /healthz and /readyz", paths)
	}
	if ap, err := netip.ParseAddrPort(cfg.AdminListen); err != nil || !ap.Addr().IsUnspecified() {
		bad("admin_listen %q: Fly's checks come over the network: want 0.0.0.0 or [::]", cfg.AdminListen)
	}
	kill, err := time.ParseDuration(f.KillTimeout)
	shutdown, err2 := time.ParseDuration(orDefault(cfg.ShutdownTimeout, "15s"))
	if err != nil || err2 != nil || kill <= shutdown || f.KillSignal != "SIGTERM" {
		bad("kill_signal %s, kill_timeout %q: want SIGTERM and more than shutdown_timeout %v", f.KillSignal, f.KillTimeout, shutdown)
	}
	for name := range f.Env {
		if secretName.MatchString(name) {
			bad("env.%s: fly.toml is committed: set secrets with fly secrets set", name)
		}
	}
	return errs
}

func readFly(t *testing.T) (flyApp, string) {
	t.Helper()
	data := readFile(t, "fly/fly.toml")
	f, err := decodeFly(string(data))
	if err != nil {
		t.Fatalf("fly/fly.toml: %v", err)
	}
	if len(f.Files) != 1 {
		t.Fatalf("fly/fly.toml: files %v: want the moltgate configuration", f.Files)
	}
	config, err := os.ReadFile(filepath.Join("..", f.Files[0].LocalPath)) // fly deploy runs at the root
	if err != nil {
		t.Fatalf("fly/fly.toml: files: %v", err)
	}
	return f, string(config)
}

// fly.toml runs moltgate behind Fly's proxy with checks on /healthz and /readyz; its
// configuration passes moltgate's config check, and lands where the image's CMD reads it.
func TestFly(t *testing.T) {
	t.Parallel()
	f, text := readFly(t)
	cfg, envRefs, fileRefs, err := parseConfig(text)
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range flyProblems(f, cfg) {
		t.Error(err)
	}
	if len(fileRefs) > 0 {
		t.Errorf("secret files %v: Fly secrets are environment variables", fileRefs)
	}
	dockerfile, err := os.ReadFile(filepath.Join("fly", f.Build.Dockerfile))
	if err != nil {
		t.Fatalf("build.dockerfile: %v", err)
	}
	if want := `CMD ["serve", "--config", "` + f.Files[0].GuestPath + `"]`; !strings.Contains(string(dockerfile), want) {
		t.Errorf("files: guest_path %s is not what the image's CMD reads (want %s)", f.Files[0].GuestPath, want)
	}
	env := map[string]string{}
	for _, name := range envRefs {
		env[name] = strings.Repeat("s", 40)
	}
	if err := configCheck(t, text, env); err != nil {
		t.Error(err)
	}
}

// Each fly.toml check refuses a file that breaks it.
func TestFlyRefused(t *testing.T) {
	t.Parallel()
	data := readFile(t, "fly/fly.toml")
	good := string(data)
	_, text := readFly(t)
	cfg, _, _, err := parseConfig(text)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct{ from, to string }{
		"proxy port":         {"internal_port = 8080", "internal_port = 9090"},
		"readiness missing":  {`path = "/readyz"`, `path = "/healthz"`},
		"check on the proxy": {"port = 9090\n    method = \"get\"\n    path = \"/healthz\"", "port = 8080\n    method = \"get\"\n    path = \"/healthz\""},
		"short kill timeout": {`kill_timeout = "30s"`, `kill_timeout = "5s"`},
		"kill by SIGINT":     {`kill_signal = "SIGTERM"`, `kill_signal = "SIGINT"`},
		"secret in env":      {"[build]", "[env]\n  MOLTGATE_ADMIN_TOKEN = \"0123\"\n\n[build]"},
		"scale to zero":      {`auto_stop_machines = "off"`, `auto_stop_machines = "stop"`},
		"misspelt key":       {"internal_port", "internalport"},
	} {
		t.Run(name, func(t *testing.T) {
			bad := strings.Replace(good, c.from, c.to, 1)
			if bad == good {
				t.Fatal("the mutation changed nothing")
			}
			f, err := decodeFly(bad)
			if err == nil && len(flyProblems(f, cfg)) == 0 {
				t.Error("not refused")
			}
		})
	}
	f, _ := decodeFly(good)
	loopback := cfg
	loopback.AdminListen = "127.0.0.1:9090"
	if len(flyProblems(f, loopback)) == 0 {
		t.Error("admin_listen on loopback: not refused")
	}
}
