package deploy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
)

// buildDir holds the moltgate binary the tests build once.
var buildDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "moltgate-deploy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// readFile is the content of path, or the test's end.
func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// moltgateBinary builds ../cmd/moltgate in moltgate's own module (its go.mod, not this one's),
// once, as the end-to-end tests do.
var moltgateBinary = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(buildDir, "moltgate")
	build := exec.Command("go", "build", "-o", bin, "./cmd/moltgate")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build moltgate: %v\n%s", err, out)
	}
	return bin, nil
})

// issue11Keys are the configuration keys of issue 11's replicas (store.backend, store.redis,
// cluster.max_staleness), which the branch that implements them adds. A moltgate built
// without them refuses them as unknown keys, and only as that: see configCheck.
var issue11Keys = []string{"store.backend", "store.redis", "cluster"}

// configProblem is one problem of `moltgate config check`'s refusal, "KEY: message (line N)":
// the whole message when there is one ("moltgate: config FILE: KEY: …"), else a line each.
var configProblem = regexp.MustCompile(`(?m)^(?:(?:moltgate: )?config \S+: |\s+)([a-z_.\[\]0-9]+): (.*)$`)

// configCheck runs `moltgate config check` on the configuration text with the environment env
// (the secrets' variables). It returns nil when moltgate accepts the file, or when the only
// problems are issue11Keys unknown to a moltgate built before them: then every other key has
// still been decoded strictly and validated, and every secret resolved.
func configCheck(t *testing.T, config string, env map[string]string) error {
	t.Helper()
	bin, err := moltgateBinary()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "moltgate.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "config", "check", path)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if cmd.Run() == nil {
		return nil
	}
	problems := configProblem.FindAllStringSubmatch(out.String(), -1)
	pending := len(problems) > 0
	for _, p := range problems {
		if !slices.Contains(issue11Keys, p[1]) || !strings.HasPrefix(p[2], "unknown key") {
			pending = false
		}
	}
	if pending {
		t.Logf("this moltgate does not know %v yet (issue 11's replicas): every other key checked", issue11Keys)
		return nil
	}
	return fmt.Errorf("moltgate config check: %s", strings.TrimSpace(out.String()))
}

// TestConfigCheckRefuses proves configCheck is no rubber stamp: a misspelt key, an inline
// secret and a missing secret are refused, and an issue 11 key does not hide another problem.
func TestConfigCheckRefuses(t *testing.T) {
	t.Parallel()
	token := map[string]string{"T": strings.Repeat("t", 40)}
	for name, c := range map[string]struct {
		config string
		env    map[string]string
	}{
		"misspelt key":        {"listne: 0.0.0.0:8080\n", nil},
		"inline secret":       {"admin_token: " + strings.Repeat("t", 40) + "\n", nil},
		"secret not set":      {"admin_token: {env: T}\n", nil},
		"unknown key besides": {"store:\n  backend: redis\nlisten: nope\n", nil},
	} {
		if err := configCheck(t, c.config, c.env); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := configCheck(t, "admin_token: {env: T}\n", token); err != nil {
		t.Errorf("a good configuration: %v", err)
	}
}
