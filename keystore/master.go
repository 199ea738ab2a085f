package keystore

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// Secret is a byte string that never prints: fmt, slog and encoding/json all see "[redacted]".
type Secret []byte

// String implements fmt.Stringer without revealing the value.
func (Secret) String() string { return "[redacted]" }

// GoString implements fmt.GoStringer without revealing the value (%#v).
func (Secret) GoString() string { return "[redacted]" }

// LogValue implements slog.LogValuer without revealing the value.
func (Secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// MarshalJSON implements json.Marshaler without revealing the value.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"[redacted]"`), nil }

// ParseMasterKey decodes a 32-byte master key written as 64 hex digits or standard/URL base64,
// surrounding white space ignored. Errors never quote the input.
func ParseMasterKey(text []byte) (Secret, error) {
	s := strings.TrimSpace(string(text))
	for _, dec := range []func(string) ([]byte, error){
		hex.DecodeString, base64.StdEncoding.DecodeString, base64.URLEncoding.DecodeString,
	} {
		if k, err := dec(s); err == nil && len(k) == KeySize {
			return k, nil
		}
	}
	return nil, fmt.Errorf("keystore: master key: want %d bytes as hex or base64", KeySize)
}

// LoadOrCreateDevKey reads the development master key at path, creating it (32 random bytes,
// hex, mode 0600) when missing. created reports a new key. A key file readable by group or
// others is refused: anyone who can read it can open every tenant secret.
func LoadOrCreateDevKey(path string) (key Secret, created bool, err error) {
	info, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		k := make([]byte, KeySize)
		if _, err := rand.Read(k); err != nil {
			return nil, false, fmt.Errorf("keystore: dev key: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, false, fmt.Errorf("keystore: dev key: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, false, fmt.Errorf("keystore: dev key: %w", err)
		}
		_, werr := f.WriteString(hex.EncodeToString(k) + "\n")
		if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
			return nil, false, fmt.Errorf("keystore: dev key: %w", err)
		}
		return k, true, nil
	case err != nil:
		return nil, false, fmt.Errorf("keystore: dev key: %w", err)
	case info.Mode().Perm()&0o077 != 0:
		return nil, false, fmt.Errorf("keystore: dev key %s: mode %v is readable by others, want 0600", path, info.Mode().Perm())
	}
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, false, fmt.Errorf("keystore: dev key: %w", err)
	}
	k, err := ParseMasterKey(text)
	return k, false, err
}
