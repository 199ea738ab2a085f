package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	flyapi "github.com/superfly/fly-go"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/provisioner/fly"
	"github.com/moltgate/moltgate/provisioner/flytest"
)

const gatewayImageDir = "../../deploy/gateway-image/"

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line     int
	cmd, arg string
}

func parseDockerfile(src string) []instruction {
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(src, "\n") {
		t := strings.TrimSpace(line)
		if cur.Len() == 0 && (t == "" || strings.HasPrefix(t, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if body, ok := strings.CutSuffix(t, "\\"); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(t)
		cmd, arg, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{line: start, cmd: strings.ToUpper(cmd), arg: strings.TrimSpace(arg)})
		cur.Reset()
	}
	return out
}

var (
	digestRE     = regexp.MustCompile(`@sha256:[0-9a-f]{64}$`)
	secretNameRE = regexp.MustCompile(`(?i)token|key|secret|passw|credential|auth`)
	openclawRE   = regexp.MustCompile(`\bopenclaw@([0-9][0-9A-Za-z.+-]*)`)
	nodeRE       = regexp.MustCompile(`\bnode@([0-9.]+)`)
	envPairRE    = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S*)`)
)

// dockerfileProblems lists how src breaks the gateway image's rules: every FROM pinned by
// digest (or naming an earlier stage), a last USER that is not root, no ENV or ARG whose
// name says it holds a secret, OpenClaw and Node at the Makefile's pins.
func dockerfileProblems(src, makefile string) []string {
	var problems []string
	bad := func(in instruction, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("line %d (%s): ", in.line, in.cmd)+fmt.Sprintf(format, args...))
	}
	stages := map[string]bool{}
	user := ""
	var froms, openclaws, nodes []string
	for _, in := range parseDockerfile(src) {
		switch in.cmd {
		case "FROM":
			f := strings.Fields(in.arg)
			ref := ""
			for _, w := range f {
				if !strings.HasPrefix(w, "--") {
					ref = w
					break
				}
			}
			if !stages[ref] && !digestRE.MatchString(ref) {
				bad(in, "%q is not pinned by digest", ref)
			}
			if len(f) >= 3 && strings.EqualFold(f[len(f)-2], "AS") {
				stages[f[len(f)-1]] = true
			}
			froms = append(froms, ref)
		case "USER":
			user = in.arg
		case "ENV", "ARG":
			names := []string{}
			for _, m := range envPairRE.FindAllStringSubmatch(in.arg, -1) {
				names = append(names, m[1])
			}
			if len(names) == 0 { // ARG NAME, or the legacy ENV NAME value
				names = append(names, strings.Fields(in.arg)[0])
			}
			for _, n := range names {
				if secretNameRE.MatchString(n) {
					bad(in, "%s looks like a secret: secrets come from the environment at start, never the image", n)
				}
			}
		case "RUN":
			for _, m := range openclawRE.FindAllStringSubmatch(in.arg, -1) {
				openclaws = append(openclaws, m[1])
			}
		}
	}
	for _, ref := range froms {
		if v, ok := strings.CutPrefix(ref, "node:"); ok {
			nodes = append(nodes, strings.SplitN(v, "-", 2)[0])
		}
	}
	switch u, _, _ := strings.Cut(user, ":"); u {
	case "", "root", "0":
		problems = append(problems, fmt.Sprintf("USER %q: the gateway must run as a non-root user", user))
	}
	pins := func(what string, re *regexp.Regexp, got []string) {
		want := re.FindStringSubmatch(makefile)
		switch {
		case want == nil:
			problems = append(problems, "the Makefile pins no "+what)
		case len(got) == 0:
			problems = append(problems, "no "+what+" in the image")
		default:
			for _, v := range got {
				if v != want[1] {
					problems = append(problems, fmt.Sprintf("%s %s, the Makefile pins %s", what, v, want[1]))
				}
			}
		}
	}
	pins("openclaw", openclawRE, openclaws)
	pins("node", nodeRE, nodes)
	return problems
}

// Issue 14: the gateway image's Dockerfile keeps its rules: bases pinned by digest, a
// non-root user, no secret, OpenClaw and Node at the Makefile's pins; and the rules catch
// each breach.
func TestGatewayImageDockerfile(t *testing.T) {
	src, err := os.ReadFile(gatewayImageDir + "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	makefile, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if p := dockerfileProblems(string(src), string(makefile)); len(p) > 0 {
		t.Fatalf("deploy/gateway-image/Dockerfile:\n%s", strings.Join(p, "\n"))
	}
	for _, in := range parseDockerfile(string(src)) {
		if in.cmd != "COPY" || strings.Contains(in.arg, "--from=") {
			continue
		}
		f := strings.Fields(in.arg)
		if _, err := os.Stat(gatewayImageDir + f[len(f)-2]); err != nil {
			t.Errorf("line %d: COPY of a file not in deploy/gateway-image: %v", in.line, err)
		}
	}

	pinned := "@sha256:" + strings.Repeat("a", 64)
	good := "FROM node:24.21.0-slim" + pinned + " AS base\nFROM base\nRUN npm i -g openclaw@2026.9.6\nUSER 10001\n"
	mk := "NODE_PKG := node@24.21.0\nOPENCLAW_PKGS := openclaw@2026.9.6 openclaw-node@0.14.0\n"
	if p := dockerfileProblems(good, mk); len(p) > 0 {
		t.Fatalf("a good Dockerfile refused: %v", p)
	}
	for _, tt := range []struct{ name, src, want string }{
		{"tag only", strings.Replace(good, pinned, "", 1), "not pinned by digest"},
		{"another base by tag", good + "FROM alpine:3.22\nUSER 1\n", `"alpine:3.22" is not pinned`},
		{"no user", strings.Replace(good, "USER 10001\n", "", 1), "non-root"},
		{"root last", good + "USER root\n", "non-root"},
		{"uid 0", good + "USER 0:0\n", "non-root"},
		{"token in env", good + "ENV OPENCLAW_GATEWAY_TOKEN=abc\n", "OPENCLAW_GATEWAY_TOKEN looks like a secret"},
		{"key in arg", good + "ARG ANTHROPIC_API_KEY\n", "ANTHROPIC_API_KEY looks like a secret"},
		{"password, legacy env", good + "ENV DB_PASSWORD hunter2\n", "DB_PASSWORD looks like a secret"},
		{"continued env", good + "ENV A=1 \\\n    TUNNEL_TOKEN=x\n", "TUNNEL_TOKEN looks like a secret"},
		{"other openclaw", strings.Replace(good, "openclaw@2026.9.6", "openclaw@2026.10.1", 1), "openclaw 2026.10.1, the Makefile pins 2026.9.6"},
		{"no openclaw", strings.Replace(good, "openclaw@2026.9.6", "something", 1), "no openclaw"},
		{"other node", strings.Replace(good, "node:24.21.0", "node:26.1.0", 1), "node 26.1.0, the Makefile pins 24.21.0"},
	} {
		p := strings.Join(dockerfileProblems(tt.src, mk), "\n")
		if !strings.Contains(p, tt.want) {
			t.Errorf("%s: got problems %q, want %q", tt.name, p, tt.want)
		}
	}
}

// Issue 14: machine.json is what the fly driver sends: launched by the driver (the real
// flaps client against flytest) with machine.json's checks, the machine's environment,
// size, mount, restart policy and checks are machine.json's; the gateway binds loopback at
// the Dockerfile's port, the only port checked is the health check's, and no service is
// declared (the tunnel is the only way in).
func TestGatewayImageMachineSettingsMatchTheFlyDriver(t *testing.T) {
	raw, err := os.ReadFile(gatewayImageDir + "machine.json")
	if err != nil {
		t.Fatal(err)
	}
	var want flyapi.MachineConfig
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&want); err != nil {
		t.Fatalf("machine.json: %v", err)
	}

	fake, err := flytest.New(flytest.Config{Org: "moltgate", Token: "fo1_image-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	d, err := fly.New(fly.Config{Org: "moltgate", Region: "ams", Token: keystore.Secret("fo1_image-test"), BaseURL: fake.URL,
		Checks: want.Checks, StartTimeout: time.Minute, WaitTimeout: time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := d.EnsureApp(ctx, "img"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.EnsureVolume(ctx, "img"); err != nil {
		t.Fatal(err)
	}
	v, err := d.SetSecrets(ctx, "img", map[string]keystore.Secret{fly.SecretGatewayToken: keystore.Secret("t")})
	if err != nil {
		t.Fatal(err)
	}
	image := "registry.example.test/moltgate-gateway@sha256:" + strings.Repeat("d", 64)
	if _, err := d.EnsureMachine(ctx, "img", fly.MachineSpec{Image: image, SecretsVersion: v}); err != nil {
		t.Fatal(err)
	}
	ms := fake.Machines("mg-img")
	if len(ms) != 1 {
		t.Fatalf("machines: %d", len(ms))
	}
	got := ms[0].Config

	env := maps.Clone(got.Env)
	delete(env, fly.EnvGatewayID) // per gateway
	if !maps.Equal(env, want.Env) {
		t.Errorf("env: the driver sends %v, machine.json says %v", env, want.Env)
	}
	if g, w := got.Guest, want.Guest; g == nil || w == nil || g.CPUKind != w.CPUKind || g.CPUs != w.CPUs || g.MemoryMB != w.MemoryMB {
		t.Errorf("guest: the driver sends %+v, machine.json says %+v", *got.Guest, *want.Guest)
	}
	if len(got.Mounts) != 1 || len(want.Mounts) != 1 || got.Mounts[0].Path != want.Mounts[0].Path || got.Mounts[0].Name != want.Mounts[0].Name {
		t.Errorf("mounts: the driver sends %+v, machine.json says %+v", got.Mounts, want.Mounts)
	}
	if got.Restart == nil || want.Restart == nil || got.Restart.Policy != want.Restart.Policy {
		t.Errorf("restart: the driver sends %+v, machine.json says %+v", got.Restart, want.Restart)
	}
	if len(got.Services) > 0 || len(want.Services) > 0 {
		t.Errorf("services: the driver sends %d, machine.json declares %d; want none", len(got.Services), len(want.Services))
	}
	gotChecks, _ := json.Marshal(got.Checks)
	wantChecks, _ := json.Marshal(want.Checks)
	if !bytes.Equal(gotChecks, wantChecks) {
		t.Errorf("checks: the driver sends %s, machine.json says %s", gotChecks, wantChecks)
	}

	// The Dockerfile's defaults agree: loopback, the same gateway port, the health check's port.
	src, err := os.ReadFile(gatewayImageDir + "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	dockerEnv := map[string]string{}
	for _, in := range parseDockerfile(string(src)) {
		if in.cmd == "ENV" {
			for _, m := range envPairRE.FindAllStringSubmatch(in.arg, -1) {
				dockerEnv[m[1]] = m[2]
			}
		}
	}
	if want.Env[fly.EnvBind] != "loopback" || dockerEnv[fly.EnvBind] != "loopback" {
		t.Errorf("bind: machine.json %q, Dockerfile %q; want loopback", want.Env[fly.EnvBind], dockerEnv[fly.EnvBind])
	}
	if dockerEnv[fly.EnvPort] != want.Env[fly.EnvPort] {
		t.Errorf("gateway port: Dockerfile %q, machine.json %q", dockerEnv[fly.EnvPort], want.Env[fly.EnvPort])
	}
	var checkPorts []string
	for _, c := range want.Checks {
		if c.Port != nil {
			checkPorts = append(checkPorts, strconv.Itoa(*c.Port))
		}
	}
	if !slices.Equal(checkPorts, []string{dockerEnv["MOLTGATE_HEALTH_PORT"]}) || slices.Contains(checkPorts, want.Env[fly.EnvPort]) {
		t.Errorf("checked ports %v: want only the health check's, %s, never the loopback gateway's", checkPorts, dockerEnv["MOLTGATE_HEALTH_PORT"])
	}
}
