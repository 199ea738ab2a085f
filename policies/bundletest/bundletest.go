// Package bundletest is an OPA bundle server for tests: an httptest.Server that serves the
// bundle last published, with an ETag, and answers If-None-Match with 304, as OPA's bundle
// servers and object stores do, plus fault injection (an HTTP status instead of the bundle).
package bundletest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/bundle"
)

// Server serves one bundle at every path. Its zero value is not usable: use New.
type Server struct {
	*httptest.Server
	requests atomic.Int64

	mu     sync.Mutex
	body   []byte
	etag   string
	status int // non-zero: answer this instead of the bundle
}

// New starts a server with nothing published (404); Close it when done.
func New() *Server {
	s := &Server{}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	s.mu.Lock()
	body, etag, status := s.body, s.etag, s.status
	s.mu.Unlock()
	switch {
	case status != 0:
		http.Error(w, http.StatusText(status), status)
	case body == nil:
		http.NotFound(w, r)
	case r.Header.Get("If-None-Match") == etag:
		w.WriteHeader(http.StatusNotModified)
	default:
		w.Header().Set("ETag", etag)
		w.Header().Set("Content-Type", "application/gzip")
		w.Write(body)
	}
}

// Publish serves body from now on, with a new ETag (its hash), and clears a Fail.
func (s *Server) Publish(body []byte) {
	sum := sha256.Sum256(body)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body, s.etag, s.status = bytes.Clone(body), `"`+hex.EncodeToString(sum[:8])+`"`, 0
}

// Fail answers every request with status until the next Publish.
func (s *Server) Fail(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = status
}

// Requests is the number of requests served so far.
func (s *Server) Requests() int64 { return s.requests.Load() }

// Encode writes b as a bundle file (gzipped tarball).
func Encode(b bundle.Bundle) ([]byte, error) {
	var buf bytes.Buffer
	if err := bundle.Write(&buf, b); err != nil {
		return nil, fmt.Errorf("bundletest: %w", err)
	}
	return buf.Bytes(), nil
}

// KeyPair returns a new ES256 key pair, PEM encoded: the private key signs bundles, the
// public key verifies them.
func KeyPair() (private, public []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), nil
}
