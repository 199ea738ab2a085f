package keystore

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testKeystore(t *testing.T) *Keystore {
	t.Helper()
	ring, err := NewKeyring(1, bytes.Repeat([]byte{7}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return New(ring)
}

func TestSealOpenRoundTrip(t *testing.T) {
	k := testKeystore(t)
	for _, size := range []int{0, 1, 64, 1024, 64 << 10} {
		plain := bytes.Repeat([]byte{'s'}, size)
		sealed, err := k.Seal("tenant-a", "gw1/token", "gateway-token", plain)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(sealed, []byte("sss")) {
			t.Fatalf("size %d: plaintext visible in ciphertext", size)
		}
		got, err := k.Open("tenant-a", "gw1/token", "gateway-token", sealed)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("size %d: got %d bytes, %v", size, len(got), err)
		}
	}
}

func TestSealUsesFreshNonces(t *testing.T) {
	k := testKeystore(t)
	a, _ := k.Seal("t", "r", "p", []byte("same"))
	b, _ := k.Seal("t", "r", "p", []byte("same"))
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same plaintext are identical: nonce reused")
	}
}

func TestOpenRefusesMovedOrDamagedCiphertext(t *testing.T) {
	k := testKeystore(t)
	sealed, err := k.Seal("tenant-a", "gw1/token", "gateway-token", []byte("secret-value"))
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(sealed)
	flipped[len(flipped)-1] ^= 1
	nonceFlip := bytes.Clone(sealed)
	nonceFlip[6] ^= 0x80
	otherVersion := bytes.Clone(sealed)
	otherVersion[4] = 9
	tests := []refusal{
		{"other tenant", "tenant-b", "gw1/token", "gateway-token", sealed, ErrOpen},
		{"other record", "tenant-a", "gw2/token", "gateway-token", sealed, ErrOpen},
		{"other purpose", "tenant-a", "gw1/token", "api-key", sealed, ErrOpen},
		{"bit flipped", "tenant-a", "gw1/token", "gateway-token", flipped, ErrOpen},
		{"nonce flipped", "tenant-a", "gw1/token", "gateway-token", nonceFlip, ErrOpen},
		{"truncated tag", "tenant-a", "gw1/token", "gateway-token", sealed[:len(sealed)-1], ErrOpen},
		{"truncated to header", "tenant-a", "gw1/token", "gateway-token", sealed[:headerSize], ErrMalformed},
		{"empty", "tenant-a", "gw1/token", "gateway-token", nil, ErrMalformed},
		{"unknown format", "tenant-a", "gw1/token", "gateway-token", append([]byte{9}, sealed[1:]...), ErrMalformed},
		{"unknown version", "tenant-a", "gw1/token", "gateway-token", otherVersion, ErrUnknownVersion},
		// Tenant and record are length-prefixed in the additional data, so shifting a
		// separator between them cannot produce the same binding.
		{"boundary shift", "tenant-agw1", "/token", "gateway-token", sealed, ErrOpen},
	}
	checkRefusals(t, k, tests)
}

func TestKeyringVersions(t *testing.T) {
	v1 := bytes.Repeat([]byte{1}, KeySize)
	ring, err := NewKeyring(1, v1)
	if err != nil {
		t.Fatal(err)
	}
	old := New(ring)
	sealed, _ := old.Seal("t", "r", "p", []byte("x"))

	ring2, _ := NewKeyring(1, v1)
	if err := ring2.Add(2, bytes.Repeat([]byte{2}, KeySize)); err != nil {
		t.Fatal(err)
	}
	k := New(ring2)
	if got, err := k.Open("t", "r", "p", sealed); err != nil || string(got) != "x" {
		t.Fatalf("old version after adding v2: got %q, %v", got, err)
	}
	fresh, _ := k.Seal("t", "r", "p", []byte("y"))
	if v, _ := Version(fresh); v != 2 {
		t.Fatalf("seal version: got %d, want 2", v)
	}
	for _, bad := range []struct {
		v   uint32
		key []byte
	}{{0, v1}, {3, v1[:31]}, {2, v1}} {
		if err := ring2.Add(bad.v, bad.key); err == nil {
			t.Errorf("Add(%d, %d bytes) accepted", bad.v, len(bad.key))
		}
	}
}

func TestDeriveKeySeparatesTenantsAndPurposes(t *testing.T) {
	m := bytes.Repeat([]byte{3}, KeySize)
	a, _ := DeriveKey(m, "a", "p")
	b, _ := DeriveKey(m, "b", "p")
	c, _ := DeriveKey(m, "a", "q")
	if bytes.Equal(a, b) || bytes.Equal(a, c) || bytes.Equal(a, m) {
		t.Fatal("derived keys collide")
	}
}

func TestSecretRedacts(t *testing.T) {
	s := Secret("hunter2-topsecret")
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "key", s)
	j, _ := json.Marshal(struct{ K Secret }{s})
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %s %#v %+v", s, s, s, s), buf.String(), string(j),
		fmt.Errorf("wrap: %v", s).Error()} {
		if strings.Contains(out, "hunter2") {
			t.Fatalf("secret printed: %s", out)
		}
	}
}

func TestParseMasterKey(t *testing.T) {
	raw := bytes.Repeat([]byte{0xab}, KeySize)
	for _, in := range []string{hex.EncodeToString(raw), " " + hex.EncodeToString(raw) + "\n"} {
		k, err := ParseMasterKey([]byte(in))
		if err != nil || !bytes.Equal(k, raw) {
			t.Fatalf("parse %q: %v", in, err)
		}
	}
	for _, bad := range []string{"", "abcd", hex.EncodeToString(raw[:31]), strings.Repeat("zz", 32)} {
		_, err := ParseMasterKey([]byte(bad))
		if err == nil {
			t.Fatalf("parse %q accepted", bad)
		}
		if bad != "" && strings.Contains(err.Error(), bad) {
			t.Fatalf("error quotes the input: %v", err)
		}
	}
}

func TestLoadOrCreateDevKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "master.key")
	k1, created, err := LoadOrCreateDevKey(path)
	if err != nil || !created || len(k1) != KeySize {
		t.Fatalf("create: %v %v %d", created, err, len(k1))
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode: got %v, want 0600", fi.Mode().Perm())
	}
	k2, created, err := LoadOrCreateDevKey(path)
	if err != nil || created || !bytes.Equal(k1, k2) {
		t.Fatalf("reload: created=%v err=%v same=%v", created, err, bytes.Equal(k1, k2))
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateDevKey(path); err == nil {
		t.Fatal("world-readable key accepted")
	}
}
