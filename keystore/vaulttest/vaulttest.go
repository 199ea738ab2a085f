// Package vaulttest is a fake of HashiCorp Vault's transit secrets engine on httptest, for
// pointing the real vault/api client at in tests: POST or PUT /v1/<mount>/encrypt/<name>,
// /v1/<mount>/decrypt/<name> and /v1/<mount>/datakey/plaintext/<name>, X-Vault-Token checked,
// Vault's JSON envelope ({"data":…}, errors as {"errors":[…]} with 400/403/5xx), keys with
// versions (RotateKey), ciphertexts "vault:vN:base64(nonce|AES-256-GCM)", and fault injection.
package vaulttest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Server is the fake Vault. Its methods are safe for concurrent use.
type Server struct {
	*httptest.Server
	// Token is the only accepted X-Vault-Token.
	Token string
	// Mount is the transit mount path. "transit".
	Mount string

	mu     sync.Mutex
	keys   map[string][][]byte // name → versions (index 0 = v1)
	fail   []int               // statuses to answer the next requests with
	calls  map[string]int      // "encrypt", "decrypt", "datakey" → count
	bodies []string            // every request body, for leak scans
}

// New starts a fake Vault with token and an empty transit engine at "transit"; it stops when
// the test ends.
func New(t testing.TB, token string) *Server {
	s := &Server{Token: token, Mount: "transit", keys: map[string][][]byte{}, calls: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// CreateKey creates transit key name (aes256-gcm96) with one version.
func (s *Server) CreateKey(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.keys[name]; !ok {
		s.keys[name] = [][]byte{newKey()}
	}
}

// RotateKey adds a version to transit key name: new ciphertexts are vault:v<n+1>:…, old
// ones still decrypt.
func (s *Server) RotateKey(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[name] = append(s.keys[name], newKey())
}

// FailNext makes the next len(statuses) requests fail with those statuses.
func (s *Server) FailNext(statuses ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = append(s.fail, statuses...)
}

// Calls reports how many requests each operation served successfully.
func (s *Server) Calls(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

// Bodies returns every request body received (they carry base64 plaintext by design of the
// API; tests use them to show what left the process, never log them).
func (s *Server) Bodies() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.bodies...)
}

func newKey() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		vaultError(w, http.StatusMethodNotAllowed, "unsupported operation")
		return
	}
	s.mu.Lock()
	if len(s.fail) > 0 {
		status := s.fail[0]
		s.fail = s.fail[1:]
		s.mu.Unlock()
		vaultError(w, status, "injected fault")
		return
	}
	s.mu.Unlock()
	if r.Header.Get("X-Vault-Token") != s.Token {
		vaultError(w, http.StatusForbidden, "permission denied")
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/"+s.Mount+"/")
	if !ok {
		vaultError(w, http.StatusNotFound, "no handler for route")
		return
	}
	var body map[string]any
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&body); err != nil {
		vaultError(w, http.StatusBadRequest, "failed to parse JSON input")
		return
	}
	raw, _ := json.Marshal(body)
	s.mu.Lock()
	s.bodies = append(s.bodies, string(raw))
	s.mu.Unlock()
	switch {
	case strings.HasPrefix(rest, "encrypt/"):
		s.encrypt(w, strings.TrimPrefix(rest, "encrypt/"), body)
	case strings.HasPrefix(rest, "decrypt/"):
		s.decrypt(w, strings.TrimPrefix(rest, "decrypt/"), body)
	case strings.HasPrefix(rest, "datakey/plaintext/"):
		s.datakey(w, strings.TrimPrefix(rest, "datakey/plaintext/"))
	default:
		vaultError(w, http.StatusNotFound, "no handler for route")
	}
}

func (s *Server) encrypt(w http.ResponseWriter, name string, body map[string]any) {
	p, _ := body["plaintext"].(string)
	plain, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		vaultError(w, http.StatusBadRequest, "failed to base64-decode plaintext")
		return
	}
	// Vault upserts the key on encrypt when the policy allows it; so does the fake.
	s.CreateKey(name)
	ct, version := s.seal(name, plain)
	s.count("encrypt")
	respond(w, map[string]any{"ciphertext": ct, "key_version": version})
}

func (s *Server) decrypt(w http.ResponseWriter, name string, body map[string]any) {
	ct, _ := body["ciphertext"].(string)
	plain, err := s.open(name, ct)
	if err != nil {
		vaultError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.count("decrypt")
	respond(w, map[string]any{"plaintext": base64.StdEncoding.EncodeToString(plain)})
}

func (s *Server) datakey(w http.ResponseWriter, name string) {
	s.mu.Lock()
	_, ok := s.keys[name]
	s.mu.Unlock()
	if !ok {
		vaultError(w, http.StatusBadRequest, "encryption key not found")
		return
	}
	k := newKey()
	ct, version := s.seal(name, k)
	s.count("datakey")
	respond(w, map[string]any{"plaintext": base64.StdEncoding.EncodeToString(k), "ciphertext": ct, "key_version": version})
}

func (s *Server) seal(name string, plain []byte) (string, int) {
	s.mu.Lock()
	versions := s.keys[name]
	s.mu.Unlock()
	v := len(versions)
	aead := gcm(versions[v-1])
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	out := aead.Seal(nonce, nonce, plain, []byte(name))
	return "vault:v" + strconv.Itoa(v) + ":" + base64.StdEncoding.EncodeToString(out), v
}

func (s *Server) open(name, ct string) ([]byte, error) {
	s.mu.Lock()
	versions, ok := s.keys[name]
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("encryption key not found")
	}
	rest, ok := strings.CutPrefix(ct, "vault:v")
	vs, b64, ok2 := strings.Cut(rest, ":")
	v, err := strconv.Atoi(vs)
	if !ok || !ok2 || err != nil || v < 1 {
		return nil, fmt.Errorf("invalid ciphertext: no prefix")
	}
	if v > len(versions) {
		return nil, fmt.Errorf("invalid ciphertext: key version not found")
	}
	data, err := base64.StdEncoding.DecodeString(b64)
	aead := gcm(versions[v-1])
	if err != nil || len(data) < aead.NonceSize() {
		return nil, fmt.Errorf("invalid ciphertext: could not decode")
	}
	plain, err := aead.Open(nil, data[:aead.NonceSize()], data[aead.NonceSize():], []byte(name))
	if err != nil {
		return nil, fmt.Errorf("cipher: message authentication failed")
	}
	return plain, nil
}

func (s *Server) count(op string) {
	s.mu.Lock()
	s.calls[op]++
	s.mu.Unlock()
}

func gcm(key []byte) cipher.AEAD {
	b, _ := aes.NewCipher(key)
	a, _ := cipher.NewGCM(b)
	return a
}

func respond(w http.ResponseWriter, data map[string]any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"request_id": "00000000-0000-0000-0000-000000000000", "lease_id": "", "renewable": false,
		"lease_duration": 0, "data": data, "wrap_info": nil, "warnings": nil, "auth": nil,
	})
}

func vaultError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []string{msg}})
}
