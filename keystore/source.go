package keystore

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	vault "github.com/hashicorp/vault/api"

	"github.com/moltgate/moltgate/store"
)

// MasterKeySource loads the master key versions at start. Sources that can make a new version
// (for rotate-master) also implement MasterKeyAdder; those that can drop a retired one,
// MasterKeyRetirer.
type MasterKeySource interface {
	Load(ctx context.Context) (map[uint32]Secret, error)
}

// MasterKeyAdder creates, durably stores and returns a new master key version, higher than
// every existing one.
type MasterKeyAdder interface {
	AddVersion(ctx context.Context) (uint32, Secret, error)
}

// MasterKeyRetirer deletes a retired master key version from where it is kept.
type MasterKeyRetirer interface {
	Retire(ctx context.Context, version uint32) error
}

// ParseKeyring reads master key versions written as "VERSION:KEY" entries, one per line or
// separated by commas, KEY in hex or base64; blank lines and lines starting with # are
// ignored. A text holding one bare KEY (the development master.key file) is version 1.
// Errors never quote key material.
func ParseKeyring(text []byte) (map[uint32]Secret, error) {
	var entries []string
	sc := bufio.NewScanner(bytes.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		for e := range strings.SplitSeq(line, ",") {
			if e = strings.TrimSpace(e); e != "" {
				entries = append(entries, e)
			}
		}
	}
	if len(entries) == 1 && !strings.Contains(entries[0], ":") {
		k, err := ParseMasterKey([]byte(entries[0]))
		if err != nil {
			return nil, err
		}
		return map[uint32]Secret{1: k}, nil
	}
	out := map[uint32]Secret{}
	for i, e := range entries {
		vs, ks, ok := strings.Cut(e, ":")
		v, err := strconv.ParseUint(vs, 10, 32)
		if !ok || err != nil || v == 0 {
			return nil, fmt.Errorf("keystore: keyring entry %d: want VERSION:KEY with VERSION ≥ 1", i+1)
		}
		k, err := ParseMasterKey([]byte(ks))
		if err != nil {
			return nil, fmt.Errorf("keystore: keyring entry %d (version %d): %w", i+1, v, err)
		}
		if _, dup := out[uint32(v)]; dup {
			return nil, fmt.Errorf("keystore: keyring: version %d twice", v)
		}
		out[uint32(v)] = k
	}
	if len(out) == 0 {
		return nil, errors.New("keystore: keyring: no keys")
	}
	return out, nil
}

// StaticSource is a fixed set of versions, e.g. parsed with ParseKeyring from an environment
// variable a secrets manager injected. It cannot add versions: put the new version into the
// secret and restart.
type StaticSource map[uint32]Secret

// Load implements MasterKeySource.
func (s StaticSource) Load(context.Context) (map[uint32]Secret, error) {
	if len(s) == 0 {
		return nil, errors.New("keystore: no master keys")
	}
	out := make(map[uint32]Secret, len(s))
	for v, k := range s { // copies: callers clear what Load returns
		out[v] = bytes.Clone(k)
	}
	return out, nil
}

// FileSource keeps master key versions in plain text in one file (mode 0600), as ParseKeyring
// reads it: for development, and for secrets managers that mount a file. AddVersion and Retire
// rewrite the file atomically (temporary file, fsync, rename). The keys are on disk in plain
// text: production uses VaultTransitSource.
type FileSource struct {
	Path string
}

// Load implements MasterKeySource. A file readable by group or others is refused.
func (f FileSource) Load(context.Context) (map[uint32]Secret, error) {
	info, err := os.Stat(f.Path)
	if err != nil {
		return nil, fmt.Errorf("keystore: keyring file: %w", err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("keystore: keyring file %s: mode %v is readable by others, want 0600", f.Path, info.Mode().Perm())
	}
	text, err := os.ReadFile(f.Path)
	if err != nil {
		return nil, fmt.Errorf("keystore: keyring file: %w", err)
	}
	defer clear(text)
	return ParseKeyring(text)
}

// AddVersion implements MasterKeyAdder.
func (f FileSource) AddVersion(ctx context.Context) (uint32, Secret, error) {
	keys, err := f.Load(ctx)
	if err != nil {
		return 0, nil, err
	}
	next := slices.Max(slices.Collect(maps.Keys(keys))) + 1
	k := make(Secret, KeySize)
	rand.Read(k)
	keys[next] = k
	if err := f.write(keys); err != nil {
		return 0, nil, err
	}
	return next, k, nil
}

// Retire implements MasterKeyRetirer.
func (f FileSource) Retire(ctx context.Context, version uint32) error {
	keys, err := f.Load(ctx)
	if err != nil {
		return err
	}
	if _, ok := keys[version]; !ok {
		return nil
	}
	delete(keys, version)
	if len(keys) == 0 {
		return errors.New("keystore: refusing to retire the last master key")
	}
	return f.write(keys)
}

func (f FileSource) write(keys map[uint32]Secret) error {
	var buf bytes.Buffer
	buf.WriteString("# moltgate master keys, VERSION:HEXKEY; the highest version seals.\n")
	for _, v := range slices.Sorted(maps.Keys(keys)) {
		fmt.Fprintf(&buf, "%d:%s\n", v, hex.EncodeToString(keys[v]))
	}
	defer clear(buf.Bytes())
	tmp, err := os.CreateTemp(filepath.Dir(f.Path), ".keyring-*")
	if err != nil {
		return fmt.Errorf("keystore: keyring file: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(buf.Bytes())
	if err := errors.Join(werr, tmp.Chmod(0o600), tmp.Sync(), tmp.Close()); err != nil {
		return fmt.Errorf("keystore: keyring file: %w", err)
	}
	if err := os.Rename(tmp.Name(), f.Path); err != nil {
		return fmt.Errorf("keystore: keyring file: %w", err)
	}
	if d, err := os.Open(filepath.Dir(f.Path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// masterBucket holds master key versions wrapped by Vault transit: key = version (10 digits,
// so key order is version order), value = the "vault:vN:…" ciphertext.
const masterBucket = "keystore.master"

// VaultTransitSource keeps each master key version only wrapped by a Vault transit key, in the
// KV store; Load unwraps them into memory through transit/decrypt. Plaintext master keys never
// touch disk.
type VaultTransitSource struct {
	// Client is a Vault client with its address and token set.
	Client *vault.Client
	// Mount is where the transit engine is mounted. Default "transit".
	Mount string
	// Key is the transit key's name. Required.
	Key string
	// KV stores the wrapped versions (bucket "keystore.master").
	KV KV
}

func (s VaultTransitSource) path(op string) string {
	mount := s.Mount
	if mount == "" {
		mount = "transit"
	}
	return strings.Trim(mount, "/") + "/" + op + "/" + s.Key
}

// Load implements MasterKeySource.
func (s VaultTransitSource) Load(ctx context.Context) (map[uint32]Secret, error) {
	if s.Client == nil || s.Key == "" || s.KV == nil {
		return nil, errors.New("keystore: vault source: Client, Key and KV are required")
	}
	out := map[uint32]Secret{}
	err := s.KV.ForEach(masterBucket, func(k string, wrapped []byte) error {
		v, err := strconv.ParseUint(k, 10, 32)
		if err != nil || v == 0 {
			return fmt.Errorf("keystore: vault source: bad version key %q", k)
		}
		key, err := s.unwrap(ctx, string(wrapped))
		if err != nil {
			return fmt.Errorf("keystore: vault source: version %d: %w", v, err)
		}
		out[uint32(v)] = key
		return nil
	})
	if err != nil {
		for _, k := range out {
			clear(k)
		}
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("keystore: vault source: no wrapped master keys stored (run moltgate keys rotate-master, or Init)")
	}
	return out, nil
}

// Init creates version 1 when no version is stored yet; it reports whether it did.
func (s VaultTransitSource) Init(ctx context.Context) (bool, error) {
	empty := true
	if err := s.KV.ForEach(masterBucket, func(string, []byte) error { empty = false; return nil }); err != nil {
		return false, err
	}
	if !empty {
		return false, nil
	}
	_, k, err := s.AddVersion(ctx)
	clear(k)
	return err == nil, err
}

// AddVersion implements MasterKeyAdder: 32 random bytes, wrapped by transit/encrypt; only the
// wrapped form is stored.
func (s VaultTransitSource) AddVersion(ctx context.Context) (uint32, Secret, error) {
	var last uint32
	if err := s.KV.ForEach(masterBucket, func(k string, _ []byte) error {
		if v, err := strconv.ParseUint(k, 10, 32); err == nil {
			last = max(last, uint32(v))
		}
		return nil
	}); err != nil {
		return 0, nil, err
	}
	key := make(Secret, KeySize)
	rand.Read(key)
	sec, err := s.Client.Logical().WriteWithContext(ctx, s.path("encrypt"),
		map[string]any{"plaintext": base64.StdEncoding.EncodeToString(key)})
	if err != nil {
		clear(key)
		return 0, nil, fmt.Errorf("keystore: vault encrypt: %w", err)
	}
	ct, _ := dataString(sec, "ciphertext")
	if !strings.HasPrefix(ct, "vault:v") {
		clear(key)
		return 0, nil, errors.New("keystore: vault encrypt: no ciphertext in response")
	}
	next := last + 1
	// Swap from absent: two concurrent rotations cannot both claim one version number.
	if err := s.KV.Swap(masterBucket, versionKey(next), nil, []byte(ct)); err != nil {
		clear(key)
		if errors.Is(err, store.ErrConflict) {
			return 0, nil, fmt.Errorf("keystore: master key version %d created concurrently", next)
		}
		return 0, nil, err
	}
	return next, key, nil
}

// Retire implements MasterKeyRetirer by deleting the wrapped version.
func (s VaultTransitSource) Retire(_ context.Context, version uint32) error {
	return s.KV.Delete(masterBucket, versionKey(version))
}

func (s VaultTransitSource) unwrap(ctx context.Context, wrapped string) (Secret, error) {
	sec, err := s.Client.Logical().WriteWithContext(ctx, s.path("decrypt"), map[string]any{"ciphertext": wrapped})
	if err != nil {
		return nil, fmt.Errorf("vault decrypt: %w", err)
	}
	p, ok := dataString(sec, "plaintext")
	if !ok {
		return nil, errors.New("vault decrypt: no plaintext in response")
	}
	k, err := base64.StdEncoding.DecodeString(p)
	if err != nil || len(k) != KeySize {
		clear(k)
		return nil, fmt.Errorf("vault decrypt: plaintext is not a %d-byte key", KeySize)
	}
	return k, nil
}

func dataString(sec *vault.Secret, field string) (string, bool) {
	if sec == nil || sec.Data == nil {
		return "", false
	}
	s, ok := sec.Data[field].(string)
	return s, ok
}

func versionKey(v uint32) string { return fmt.Sprintf("%010d", v) }
