package flytest

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	fly "github.com/superfly/fly-go"
)

// secret is an app secret. The fake keeps values (tests read them with SecretValues) but
// answers them only to show_secrets=true.
type secret struct {
	value            string
	digest           string
	created, updated time.Time
}

var secretNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func digest(v string) string {
	sum := sha256.Sum256([]byte(v))
	return hex.EncodeToString(sum[:8])
}

func secretJSON(name string, sec *secret, show bool) fly.AppSecret {
	c, u := sec.created.Format(time.RFC3339), sec.updated.Format(time.RFC3339)
	out := fly.AppSecret{Name: name, Digest: sec.digest, CreatedAt: &c, UpdatedAt: &u}
	if show {
		v := sec.value
		out.Value = &v
	}
	return out
}

func secretList(a *app, show bool) []fly.AppSecret {
	names := make([]string, 0, len(a.secrets))
	for n := range a.secrets {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]fly.AppSecret, 0, len(names))
	for _, n := range names {
		out = append(out, secretJSON(n, a.secrets[n], show))
	}
	return out
}

func (s *Server) listSecrets(w http.ResponseWriter, r *http.Request, a *app) {
	writeJSON(w, http.StatusOK, fly.ListAppSecretsResp{Secrets: secretList(a, r.URL.Query().Get("show_secrets") == "true")})
}

// updateSecrets sets and unsets secrets in one call ({"values":{K: v, OLD: null}}). A call
// that changes anything mints a new version; one that changes nothing answers the current
// version.
func (s *Server) updateSecrets(w http.ResponseWriter, r *http.Request, a *app) {
	var req fly.UpdateAppSecretsRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Values == nil {
		writeError(w, http.StatusBadRequest, "values is required")
		return
	}
	for name := range req.Values {
		if !secretNameRE.MatchString(name) {
			// The name only: an error never carries a value.
			writeError(w, http.StatusBadRequest, "invalid secret name "+strings.ToValidUTF8(name, "?"))
			return
		}
	}
	if s.putSecrets(a, req.Values) {
		s.broadcast()
	}
	writeJSON(w, http.StatusOK, fly.UpdateAppSecretsResp{Secrets: secretList(a, false), Version: a.secretsVersion})
}

// putSecrets applies sets (non-nil) and unsets (nil), reporting a change, which bumps the
// version. Callers hold s.mu.
func (s *Server) putSecrets(a *app, values map[string]*string) bool {
	now, changed := s.now(), false
	for name, v := range values {
		old := a.secrets[name]
		switch {
		case v == nil && old != nil:
			delete(a.secrets, name)
			changed = true
		case v == nil:
		case old == nil:
			a.secrets[name] = &secret{value: *v, digest: digest(*v), created: now, updated: now}
			changed = true
		case old.value != *v:
			old.value, old.digest, old.updated = *v, digest(*v), now
			changed = true
		}
	}
	if changed {
		a.secretsVersion++
	}
	return changed
}

func (s *Server) getSecret(w http.ResponseWriter, r *http.Request, a *app) {
	sec := a.secrets[r.PathValue("name")]
	if sec == nil {
		writeError(w, http.StatusNotFound, "secret not found")
		return
	}
	writeJSON(w, http.StatusOK, secretJSON(r.PathValue("name"), sec, r.URL.Query().Get("show_secrets") == "true"))
}

func (s *Server) setSecret(w http.ResponseWriter, r *http.Request, a *app) {
	var req fly.SetAppSecretRequest
	if !decode(w, r, &req) {
		return
	}
	name := r.PathValue("name")
	if !secretNameRE.MatchString(name) {
		writeError(w, http.StatusBadRequest, "invalid secret name")
		return
	}
	if s.putSecrets(a, map[string]*string{name: &req.Value}) {
		s.broadcast()
	}
	writeJSON(w, http.StatusOK, fly.SetAppSecretResp{AppSecret: secretJSON(name, a.secrets[name], false), Version: a.secretsVersion})
}

func (s *Server) deleteSecret(w http.ResponseWriter, r *http.Request, a *app) {
	name := r.PathValue("name")
	if a.secrets[name] == nil {
		writeError(w, http.StatusNotFound, "secret not found")
		return
	}
	s.putSecrets(a, map[string]*string{name: nil})
	s.broadcast()
	writeJSON(w, http.StatusOK, fly.DeleteAppSecretResp{Version: a.secretsVersion})
}
