package local

import (
	"encoding/json"
	"path/filepath"
	"strings"

	"github.com/moltgate/moltgate/provisioner"
)

// quietEnv keeps a gateway offline and quiet where moltgate runs it: no LAN discovery, no
// self-respawn or auto-update, no channel start, no downloads of helper binaries.
var quietEnv = []string{
	"OPENCLAW_DISABLE_BONJOUR=1", "OPENCLAW_NO_RESPAWN=1", "OPENCLAW_SKIP_CHANNELS=1",
	"OPENCLAW_NO_AUTO_UPDATE=1", "OPENCLAW_EXEC_SHELL_SNAPSHOT=0", "OPENCLAW_OFFLINE=1",
	"NO_COLOR=1", "FORCE_COLOR=0",
}

// env is gateway id's whole environment: PATH, its own HOME, TMPDIR, state and config, the
// quiet settings, and each opened provider key as <PROVIDER>_API_KEY (OPENAI_API_KEY,
// ANTHROPIC_API_KEY: the names OpenClaw's own providers read, and what a configured
// provider's "${OPENAI_API_KEY}" refers to). Nothing of moltgate's environment is inherited:
// a tenant's agent can read its environment, and must find only its own keys there.
func (d *Driver) env(id string, keys []provisioner.Key) []string {
	dir := d.dir(id)
	env := []string{
		"PATH=" + filepath.Dir(d.cfg.OpenClaw) + ":" + d.cfg.Path,
		"HOME=" + filepath.Join(dir, "home"),
		"TMPDIR=" + filepath.Join(dir, "tmp"),
		"OPENCLAW_STATE_DIR=" + filepath.Join(dir, "state"),
		"OPENCLAW_CONFIG_PATH=" + filepath.Join(dir, "openclaw.json"),
		"LANG=C.UTF-8",
	}
	env = append(env, quietEnv...)
	for _, k := range keys {
		env = append(env, KeyEnv(k.Provider)+"="+string(k.Secret))
	}
	return env
}

// KeyEnv is the environment variable that carries a provider's key to a local gateway:
// the provider in upper case, '-' as '_', then _API_KEY ("openai" → OPENAI_API_KEY).
func KeyEnv(provider string) string {
	return strings.ToUpper(strings.ReplaceAll(provider, "-", "_")) + "_API_KEY"
}

// writeConfig writes gateway id's openclaw.json (mode 0600: it holds the token), replacing
// the file in one rename, so the gateway's watcher never reads half of it.
func (d *Driver) writeConfig(id string, port int, token string) error {
	cfg := map[string]any{}
	merge(cfg, d.cfg.OpenClawConfig)
	merge(cfg, map[string]any{
		"gateway": map[string]any{
			"mode": "local", "port": port, "bind": "loopback",
			"auth": map[string]any{"mode": "token", "token": token},
		},
		"update": map[string]any{"checkOnStart": false},
		// Without this a gateway fetches the model catalog from the internet at start.
		"models":  map[string]any{"catalogRefresh": map[string]any{"enabled": false}},
		"logging": map[string]any{"file": filepath.Join(d.dir(id), "openclaw.log")},
	})
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(d.dir(id), "openclaw.json"), b)
}

// merge merges src into dst: maps key by key, anything else replacing what is there.
// Maps of src are copied, never shared.
func merge(dst, src map[string]any) {
	for k, v := range src {
		sv, sok := v.(map[string]any)
		dv, dok := dst[k].(map[string]any)
		switch {
		case sok && dok:
			merge(dv, sv)
		case sok:
			cp := map[string]any{}
			merge(cp, sv)
			dst[k] = cp
		default:
			dst[k] = v
		}
	}
}
