package keystore

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/internal/testenv"
	"github.com/moltgate/moltgate/store"
)

// backends opens each KV backend the keystore runs on: bbolt, and a real redis-server.
// backends opens each store the keystore runs on: bbolt, and a real redis-server.
func backends() map[string]func(t *testing.T) KV {
	return map[string]func(t *testing.T) KV{
		"bolt": func(t *testing.T) KV {
			b, err := store.OpenBolt(filepath.Join(t.TempDir(), "kv.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			return b
		},
		"redis": func(t *testing.T) KV {
			srv := testenv.Redis(t)
			r, err := store.OpenRedis(t.Context(), store.RedisConfig{Addr: srv.Addr})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
			return r
		},
	}
}

// Backends is backends for the external tests (package keystore_test).
var Backends = backends

func boltKV(t *testing.T) KV { return backends()["bolt"](t) }

func saltedKeystore(t *testing.T, kv KV) *Keystore {
	t.Helper()
	ring, err := NewKeyring(1, bytes.Repeat([]byte{9}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return NewWithSalts(ring, kv)
}

// recorder captures everything a test makes observable (audit events, log lines), so the
// secret scan can look through it.
type recorder struct {
	mu     sync.Mutex
	events []audit.Event
	logs   bytes.Buffer
	fail   error
}

func (r *recorder) Emit(_ context.Context, e audit.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.events = append(r.events, e)
	return nil
}

func (r *recorder) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(writerFunc(func(p []byte) (int, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.logs.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// dump is everything recorded, as text.
func (r *recorder) dump() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, e := range r.events {
		j, _ := json.Marshal(e)
		b.Write(j)
		b.WriteByte('\n')
	}
	b.Write(r.logs.Bytes())
	return b.String()
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// scanForSecrets fails the test if any secret (or its hex or base64 form) occurs in out.
func scanForSecrets(t *testing.T, where, out string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		for _, form := range encodings(s) {
			if strings.Contains(out, form) {
				t.Fatalf("%s contains a test secret", where)
			}
		}
	}
}

// encodings are the forms a leaked secret could take in output.
func encodings(s string) []string {
	b := []byte(s)
	return []string{s, hex.EncodeToString(b), base64.StdEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b)}
}

// refusal is a ciphertext Open must refuse for tenant, record and purpose, with want.
type refusal struct {
	name                    string
	tenant, record, purpose string
	data                    []byte
	want                    error
}

// checkRefusals opens each case with k: each fails with its typed error and no plaintext.
func checkRefusals(t *testing.T, k *Keystore, tests []refusal) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := k.Open(tt.tenant, tt.record, tt.purpose, tt.data)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if got != nil {
				t.Fatalf("returned %d bytes of plaintext on failure", len(got))
			}
		})
	}
}
