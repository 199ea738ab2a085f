package keystore

import (
	"bytes"
	"errors"
	"testing"
)

func TestFormat2SealOpen(t *testing.T) {
	k := saltedKeystore(t, boltKV(t))
	for _, size := range []int{0, 1, 1024, 64 << 10} {
		plain := bytes.Repeat([]byte{'s'}, size)
		sealed, err := k.Seal("tenant-a", "keys/k1", "provider_key", plain)
		if err != nil {
			t.Fatal(err)
		}
		if h, _ := ParseHeader(sealed); h.Format != format2 || h.Master != 1 || h.Salt != 1 {
			t.Fatalf("header: got %+v, want format 2, master 1, salt 1", h)
		}
		got, err := k.Open("tenant-a", "keys/k1", "provider_key", sealed)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("size %d: got %d bytes, %v", size, len(got), err)
		}
	}
}

func TestFormat2RefusesMovedOrDamagedCiphertext(t *testing.T) {
	k := saltedKeystore(t, boltKV(t))
	sealed, err := k.Seal("tenant-a", "keys/k1", "provider_key", []byte("sk-live-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	// tenant-b under the same master key has its own salt, so even its key differs.
	if _, err := k.Seal("tenant-b", "keys/k1", "provider_key", []byte("x")); err != nil {
		t.Fatal(err)
	}
	mod := func(i int, x byte) []byte { c := bytes.Clone(sealed); c[i] ^= x; return c }
	tests := []struct {
		name                    string
		tenant, record, purpose string
		data                    []byte
		want                    error
	}{
		{"other tenant", "tenant-b", "keys/k1", "provider_key", sealed, ErrOpen},
		{"other record", "tenant-a", "keys/k2", "provider_key", sealed, ErrOpen},
		{"other purpose", "tenant-a", "keys/k1", "channel_credential", sealed, ErrOpen},
		{"tag flipped", "tenant-a", "keys/k1", "provider_key", mod(len(sealed)-1, 1), ErrOpen},
		{"body flipped", "tenant-a", "keys/k1", "provider_key", mod(header2Size, 0x40), ErrOpen},
		{"nonce flipped", "tenant-a", "keys/k1", "provider_key", mod(10, 0x80), ErrOpen},
		{"master version changed", "tenant-a", "keys/k1", "provider_key", mod(4, 3), ErrUnknownVersion},
		{"salt version changed", "tenant-a", "keys/k1", "provider_key", mod(8, 3), ErrUnknownVersion},
		{"format 2 read as format 1", "tenant-a", "keys/k1", "provider_key", mod(0, 3), ErrOpen},
		{"unknown format", "tenant-a", "keys/k1", "provider_key", mod(0, 0x10), ErrMalformed},
	}
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
	// Every truncation fails with a typed error and no plaintext.
	for n := range len(sealed) {
		got, err := k.Open("tenant-a", "keys/k1", "provider_key", sealed[:n])
		if got != nil || !(errors.Is(err, ErrOpen) || errors.Is(err, ErrMalformed)) {
			t.Fatalf("truncated to %d: got %d bytes, %v", n, len(got), err)
		}
	}
}

func TestFormat1StillOpensInSaltedKeystore(t *testing.T) {
	master := bytes.Repeat([]byte{9}, KeySize)
	ring1, _ := NewKeyring(1, master)
	legacy, err := New(ring1).Seal("tenant-a", "gateways/gw1/token", "gateway-token", []byte("tok"))
	if err != nil {
		t.Fatal(err)
	}
	k := saltedKeystore(t, boltKV(t))
	got, err := k.Open("tenant-a", "gateways/gw1/token", "gateway-token", legacy)
	if err != nil || string(got) != "tok" {
		t.Fatalf("format 1 in salted keystore: got %q, %v", got, err)
	}
}

func TestTenantSaltRotation(t *testing.T) {
	kv := boltKV(t)
	k := saltedKeystore(t, kv)
	old, _ := k.Seal("tenant-a", "r", "p", []byte("v"))
	v, err := k.AddTenantSalt("tenant-a")
	if err != nil || v != 2 {
		t.Fatalf("add salt: got %d, %v, want 2", v, err)
	}
	fresh, _ := k.Seal("tenant-a", "r", "p", []byte("v"))
	if h, _ := ParseHeader(fresh); h.Salt != 2 {
		t.Fatalf("seal after salt rotation: salt %d, want 2", h.Salt)
	}
	// Another Keystore on the same store (another replica) opens both, loading salts on demand.
	other := saltedKeystore(t, kv)
	for _, c := range [][]byte{old, fresh} {
		if got, err := other.Open("tenant-a", "r", "p", c); err != nil || string(got) != "v" {
			t.Fatalf("replica open: %q, %v", got, err)
		}
	}
	if err := k.RemoveTenantSalt("tenant-a", 2); err == nil {
		t.Fatal("removing the current salt accepted")
	}
	if err := k.RemoveTenantSalt("tenant-a", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Open("tenant-a", "r", "p", old); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("open under retired salt: got %v, want ErrUnknownVersion", err)
	}
}

func TestKeyringRemove(t *testing.T) {
	ring, _ := NewKeyring(1, bytes.Repeat([]byte{1}, KeySize))
	if err := ring.Add(2, bytes.Repeat([]byte{2}, KeySize)); err != nil {
		t.Fatal(err)
	}
	if err := ring.Remove(2); err == nil {
		t.Fatal("removing the current version accepted")
	}
	if err := ring.Remove(1); err != nil {
		t.Fatal(err)
	}
	if got := ring.Versions(); len(got) != 1 || got[0] != 2 {
		t.Fatalf("versions: got %v, want [2]", got)
	}
}
