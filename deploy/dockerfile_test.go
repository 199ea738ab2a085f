package deploy

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, its continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, …
	args string
}

// parseDockerfile splits text into instructions, dropping comments and blank lines.
func parseDockerfile(text string) []instruction {
	var out []instruction
	var cur strings.Builder
	for line := range strings.SplitSeq(text, "\n") {
		t := strings.TrimSpace(line)
		if cur.Len() == 0 && (t == "" || strings.HasPrefix(t, "#")) {
			continue
		}
		if strings.HasPrefix(t, "#") { // a comment inside a continued instruction
			continue
		}
		if s, ok := strings.CutSuffix(t, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(t)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

var (
	pinned    = regexp.MustCompile(`^[a-z0-9./_-]+:[A-Za-z0-9._-]+@sha256:[0-9a-f]{64}$`)
	flagWords = regexp.MustCompile(`^--\S+$`)
)

// dockerfileProblems returns every rule deploy/Dockerfile must keep and text breaks: each base
// image pinned by digest (with its tag, for the reader), a distroless static final stage run
// by a non-root USER, no secret in ENV or ARG, a static build (no cgo, -trimpath), no remote
// ADD, an exec-form ENTRYPOINT, and EXPOSE of the ports moltgate listens on (ports).
func dockerfileProblems(text string, ports []int32) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	stages := map[string]bool{}
	var final, user string
	built, exposed := false, map[int32]bool{}
	for _, in := range parseDockerfile(text) {
		switch in.cmd {
		case "FROM":
			words := slices.DeleteFunc(strings.Fields(in.args), flagWords.MatchString)
			if len(words) == 0 {
				bad("FROM without an image")
				continue
			}
			image := words[0]
			if !stages[image] && !pinned.MatchString(image) {
				bad("FROM %s: want NAME:TAG@sha256:DIGEST (a tag can be moved; a digest cannot)", image)
			}
			if len(words) == 3 && strings.EqualFold(words[1], "AS") {
				stages[words[2]] = true
			}
			final, user = image, ""
		case "USER":
			user = in.args
		case "ENV", "ARG":
			for _, w := range strings.Fields(in.args) {
				name, _, _ := strings.Cut(w, "=")
				if secretName.MatchString(name) {
					bad("%s %s: a secret in the image (every layer keeps it); give it at run time by reference", in.cmd, name)
				}
				if in.cmd == "ENV" && !strings.Contains(in.args, "=") {
					break // ENV NAME VALUE: one name
				}
			}
		case "RUN":
			if strings.Contains(in.args, "go build") {
				built = true
				if !strings.Contains(in.args, "CGO_ENABLED=0") || !strings.Contains(in.args, "-trimpath") {
					bad("RUN %s: want CGO_ENABLED=0 and -trimpath (a static binary without build paths)", in.args)
				}
			}
		case "ADD":
			if strings.Contains(in.args, "://") {
				bad("ADD %s: a remote file is not pinned: download it in a stage and check its digest", in.args)
			}
		case "ENTRYPOINT":
			if !strings.HasPrefix(in.args, "[") {
				bad("ENTRYPOINT %s: want the exec form, so that moltgate gets SIGTERM itself", in.args)
			}
		case "EXPOSE":
			for _, p := range strings.Fields(in.args) {
				n, _ := strconv.Atoi(strings.TrimSuffix(p, "/tcp"))
				exposed[int32(n)] = true
			}
		}
	}
	if !strings.HasPrefix(final, "gcr.io/distroless/static") {
		bad("final stage FROM %s: want gcr.io/distroless/static (no shell, no libc)", final)
	}
	name, _, _ := strings.Cut(user, ":")
	if name == "" || name == "root" || name == "0" {
		bad("final stage USER %q: want a non-root user (distroless nonroot is 65532)", user)
	}
	if !built {
		bad("no RUN go build")
	}
	for _, p := range ports {
		if !exposed[p] {
			bad("EXPOSE does not list %d, where moltgate listens (admin: /healthz and /readyz)", p)
		}
	}
	return errs
}

// ignoreProblems returns what the build context lets in that must stay out: the git
// history, the tool caches, and ./data with its development master key and admin token.
func ignoreProblems(text string) []error {
	var errs []error
	lines := strings.Fields(text)
	for _, must := range []string{".git", ".cache", "data", "bin"} {
		if !slices.Contains(lines, must) {
			errs = append(errs, fmt.Errorf("Dockerfile.dockerignore does not exclude %s", must))
		}
	}
	return errs
}

func listenPorts(t *testing.T) []int32 {
	t.Helper()
	cfg, _, _, err := parseConfig(readKube(t).configMap.Data["moltgate.yaml"])
	if err != nil {
		t.Fatal(err)
	}
	return []int32{port(cfg.Listen), port(cfg.AdminListen)}
}

// deploy/Dockerfile keeps its rules, and its context leaves secrets out.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	data := readFile(t, "Dockerfile")
	for _, err := range dockerfileProblems(string(data), listenPorts(t)) {
		t.Error(err)
	}
	ignore := readFile(t, "Dockerfile.dockerignore")
	for _, err := range ignoreProblems(string(ignore)) {
		t.Error(err)
	}
}

// Each Dockerfile rule refuses a Dockerfile that breaks it.
func TestDockerfileRefused(t *testing.T) {
	t.Parallel()
	data := readFile(t, "Dockerfile")
	good, ports := string(data), listenPorts(t)
	from := regexp.MustCompile(`(?m)^FROM (\S+)@sha256:[0-9a-f]{64}(.*)$`)
	finalFrom := regexp.MustCompile(`(?m)^FROM gcr\.io/distroless/static\S+`)
	for name, mutate := range map[string]func(string) string{
		"builder by tag only": func(s string) string {
			return strings.Replace(s, from.FindString(s), "FROM golang:1.26.8-bookworm AS build", 1)
		},
		"final by tag only": func(s string) string {
			return finalFrom.ReplaceAllString(s, "FROM gcr.io/distroless/static-debian12:nonroot")
		},
		"digest without tag": func(s string) string {
			return strings.Replace(s, "golang:1.26.8-bookworm@", "golang@", 1)
		},
		"short digest": func(s string) string { return strings.Replace(s, "@sha256:dc9ad6c0", "@sha256:", 1) },
		"root user":    func(s string) string { return strings.Replace(s, "USER 65532:65532", "USER root", 1) },
		"uid 0":        func(s string) string { return strings.Replace(s, "USER 65532:65532", "USER 0:0", 1) },
		"no user":      func(s string) string { return strings.Replace(s, "USER 65532:65532", "", 1) },
		"user in build": func(s string) string {
			return strings.Replace(strings.Replace(s, "USER 65532:65532", "", 1), "WORKDIR /src", "WORKDIR /src\nUSER 65532", 1)
		},
		"secret env": func(s string) string {
			return strings.Replace(s, "ARG VERSION=dev", "ARG VERSION=dev\nENV MOLTGATE_ADMIN_TOKEN=0123456789", 1)
		},
		"secret env, two names": func(s string) string {
			return strings.Replace(s, "ARG VERSION=dev", "ARG VERSION=dev\nENV LOG=json CLERK_SECRET_KEY=sk_live_x", 1)
		},
		"secret arg": func(s string) string {
			return strings.Replace(s, "ARG VERSION=dev", "ARG VERSION=dev\nARG REDIS_PASSWORD", 1)
		},
		"cgo on":      func(s string) string { return strings.Replace(s, "CGO_ENABLED=0 ", "", 1) },
		"build paths": func(s string) string { return strings.Replace(s, "-trimpath ", "", 1) },
		"no build":    func(s string) string { return strings.ReplaceAll(s, "go build", "go install") },
		"remote add": func(s string) string {
			return strings.Replace(s, "COPY . .", "COPY . .\nADD https://example.com/x.tgz /x", 1)
		},
		"shell entrypoint": func(s string) string {
			return strings.Replace(s, `ENTRYPOINT ["/usr/local/bin/moltgate"]`, "ENTRYPOINT /usr/local/bin/moltgate", 1)
		},
		"admin not exposed": func(s string) string { return strings.Replace(s, "EXPOSE 8080 9090", "EXPOSE 8080", 1) },
		"a base with a shell": func(s string) string {
			return finalFrom.ReplaceAllString(s, "FROM debian:bookworm-slim@sha256:"+strings.Repeat("a", 64))
		},
	} {
		t.Run(name, func(t *testing.T) {
			bad := mutate(good)
			if bad == good {
				t.Fatal("the mutation changed nothing")
			}
			if len(dockerfileProblems(bad, ports)) == 0 {
				t.Error("not refused")
			}
		})
	}
	// A stage built on an earlier stage needs no digest of its own.
	staged := good + "\nFROM build AS test\nRUN go vet ./...\nFROM " + finalFrom.FindString(good)[len("FROM "):] + "\nUSER 65532\n"
	if errs := dockerfileProblems(staged, ports); len(errs) > 0 {
		t.Errorf("FROM an earlier stage: %v, want no problem", errs)
	}
	if len(ignoreProblems(".git\n.cache\nbin\n")) == 0 {
		t.Error("a context with ./data in it: not refused")
	}
}
