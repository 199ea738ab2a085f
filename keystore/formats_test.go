package keystore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"testing"
)

func TestFormat3SealOpen(t *testing.T) {
	k := saltedKeystore(t, boltKV(t))
	for _, size := range []int{0, 1, 1024, 64 << 10} {
		plain := bytes.Repeat([]byte{'s'}, size)
		sealed, err := k.Seal("tenant-a", "keys/k1", "provider_key", plain)
		if err != nil {
			t.Fatal(err)
		}
		if h, _ := ParseHeader(sealed); h.Format != format3 || h.Master != 1 || h.Salt != 1 {
			t.Fatalf("header: got %+v, want format 3, master 1, salt 1", h)
		}
		got, err := k.Open("tenant-a", "keys/k1", "provider_key", sealed)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("size %d: got %d bytes, %v", size, len(got), err)
		}
	}
}

func TestFormat3RefusesMovedOrDamagedCiphertext(t *testing.T) {
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
	tests := []refusal{
		{"other tenant", "tenant-b", "keys/k1", "provider_key", sealed, ErrOpen},
		{"other record", "tenant-a", "keys/k2", "provider_key", sealed, ErrOpen},
		{"other purpose", "tenant-a", "keys/k1", "channel_credential", sealed, ErrOpen},
		{"tag flipped", "tenant-a", "keys/k1", "provider_key", mod(len(sealed)-1, 1), ErrOpen},
		{"body flipped", "tenant-a", "keys/k1", "provider_key", mod(header2Size, 0x40), ErrOpen},
		{"nonce flipped", "tenant-a", "keys/k1", "provider_key", mod(10, 0x80), ErrOpen},
		{"master version changed", "tenant-a", "keys/k1", "provider_key", mod(4, 3), ErrUnknownVersion},
		{"salt version changed", "tenant-a", "keys/k1", "provider_key", mod(8, 3), ErrUnknownVersion},
		{"format 3 read as format 2", "tenant-a", "keys/k1", "provider_key", mod(0, 1), ErrOpen},
		{"format 3 read as format 1", "tenant-a", "keys/k1", "provider_key", mod(0, 2), ErrOpen},
		{"unknown format", "tenant-a", "keys/k1", "provider_key", mod(0, 0x10), ErrMalformed},
	}
	checkRefusals(t, k, tests)
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

// sealFormat2 seals as the keystore did before format 3 (the layout kat.json pins).
func sealFormat2(t *testing.T, k *Keystore, tenant, record, purpose string, plain []byte) []byte {
	t.Helper()
	ts, err := k.salts.forSeal(tenant)
	if err != nil {
		t.Fatal(err)
	}
	d, err := k.key(Header{Format: format2, Master: k.ring.Current(), Salt: ts.Current}, tenant, purpose)
	if err != nil {
		t.Fatal(err)
	}
	out := []byte{format2, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(out[1:5], d.master)
	binary.BigEndian.PutUint32(out[5:9], d.salt)
	nonce := make([]byte, nonceSize)
	rand.Read(nonce)
	out = append(out, nonce...)
	return d.aead.Seal(out, nonce, plain, appendAD2(nil, tenant, record, purpose, d.master, d.salt))
}

// Ciphertexts of formats 1 and 2 still open, are refused when moved, and rotation rewrites
// them as format 3.
func TestOlderFormatsOpenAndRotateToFormat3(t *testing.T) {
	kv := boltKV(t)
	k := saltedKeystore(t, kv)
	legacy, err := New(k.ring).Seal("tenant-a", "keys/k1", "provider_key", []byte("one"))
	if err != nil {
		t.Fatal(err)
	}
	f2 := sealFormat2(t, k, "tenant-a", "keys/k2", "provider_key", []byte("two"))
	rot, err := NewRotator(RotatorConfig{Keystore: k, KV: kv, Targets: []Target{nopTarget{}}})
	if err != nil {
		t.Fatal(err)
	}
	reseal := rot.resealFunc(Job{Kind: "master"})
	for _, c := range []struct {
		record, want string
		sealed       []byte
		format       byte
	}{{"keys/k1", "one", legacy, format1}, {"keys/k2", "two", f2, format2}} {
		if h, _ := ParseHeader(c.sealed); h.Format != c.format {
			t.Fatalf("%s: format %d, want %d", c.record, h.Format, c.format)
		}
		if got, err := k.Open("tenant-a", c.record, "provider_key", c.sealed); err != nil || string(got) != c.want {
			t.Fatalf("%s: open: %q, %v", c.record, got, err)
		}
		if got, err := k.Open("tenant-a", c.record+"x", "provider_key", c.sealed); !errors.Is(err, ErrOpen) || got != nil {
			t.Fatalf("%s: open as another record: %q, %v", c.record, got, err)
		}
		out, changed, err := reseal("tenant-a", c.record, "provider_key", c.sealed)
		if err != nil || !changed {
			t.Fatalf("%s: reseal: changed %v, %v", c.record, changed, err)
		}
		if h, _ := ParseHeader(out); h.Format != format3 {
			t.Fatalf("%s: resealed as format %d, want 3", c.record, h.Format)
		}
		if got, err := k.Open("tenant-a", c.record, "provider_key", out); err != nil || string(got) != c.want {
			t.Fatalf("%s: open resealed: %q, %v", c.record, got, err)
		}
		if _, changed, _ := reseal("tenant-a", c.record, "provider_key", out); changed {
			t.Fatalf("%s: a current format-3 ciphertext resealed again", c.record)
		}
	}
}

type nopTarget struct{}

func (nopTarget) Reseal(context.Context, ResealFunc) error { return nil }
