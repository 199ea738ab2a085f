package keystore

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/moltgate/moltgate/store"
)

type katVector struct {
	Format                                byte
	Master, Salt, Tenant, Purpose, Record string
	// Context is format 3's 16-byte binding of tenant, purpose and versions (openssl dgst).
	Context                              string
	MasterVersion                        uint32 `json:"master_version"`
	SaltVersion                          uint32 `json:"salt_version"`
	Info, OKM, Nonce, Plaintext, AD, GCM string
	Sealed                               string
	// CTROpenSSL is `openssl enc -aes-256-ctr` of the plaintext under okm from counter block
	// nonce‖00000002: what GCM's ciphertext body must be.
	CTROpenSSL string `json:"ctr_openssl"`
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestKnownAnswerVectors(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "kat.json"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct{ Vectors []katVector }
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	formats := map[byte]int{}
	for _, v := range file.Vectors {
		formats[v.Format]++
	}
	if formats[format2] < 3 || formats[format3] < 3 {
		t.Fatalf("got %v vectors per format, want at least 3 of formats 2 and 3", formats)
	}
	for _, v := range file.Vectors {
		t.Run(fmt.Sprintf("format%d/%s/%s", v.Format, v.Tenant, v.Purpose), func(t *testing.T) {
			master, salt := unhex(t, v.Master), unhex(t, v.Salt)
			if got := hex.EncodeToString(tenantKeyInfo(v.Tenant, v.Purpose)); got != v.Info {
				t.Fatalf("info: got %s, want %s", got, v.Info)
			}
			okm, err := DeriveTenantKey(master, salt, v.Tenant, v.Purpose)
			if err != nil || hex.EncodeToString(okm) != v.OKM {
				t.Fatalf("HKDF: got %x, %v, want %s (openssl kdf)", okm, err, v.OKM)
			}
			d := &derived{format: v.Format, master: v.MasterVersion, salt: v.SaltVersion, purpose: v.Purpose}
			if v.Format == format3 {
				d.context = adContext(v.Tenant, v.Purpose, v.MasterVersion, v.SaltVersion)
				if got := hex.EncodeToString(d.context[:]); got != v.Context {
					t.Fatalf("context: got %s, want %s (openssl dgst)", got, v.Context)
				}
			}
			ad := d.appendAD(nil, v.Tenant, v.Record)
			if hex.EncodeToString(ad) != v.AD {
				t.Fatalf("additional data: got %x, want %s", ad, v.AD)
			}
			block, _ := aes.NewCipher(okm)
			gcm, _ := cipher.NewGCM(block)
			if got := gcm.Seal(nil, unhex(t, v.Nonce), unhex(t, v.Plaintext), ad); hex.EncodeToString(got) != v.GCM {
				t.Fatalf("AES-GCM: got %x, want %s (python cryptography)", got, v.GCM)
			}
			if body := v.GCM[:len(v.Plaintext)]; body != v.CTROpenSSL {
				t.Fatalf("AES-GCM ciphertext body %s differs from openssl enc -aes-256-ctr %s", body, v.CTROpenSSL)
			}

			// The whole ciphertext opens through the Keystore with that master key
			// and tenant salt, and only for its own record.
			kv, err := store.OpenBolt(filepath.Join(t.TempDir(), "kv.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer kv.Close()
			ts, _ := json.Marshal(TenantSalts{Current: v.SaltVersion, Versions: map[uint32][]byte{v.SaltVersion: salt}})
			if err := kv.Put(saltsBucket, v.Tenant, ts); err != nil {
				t.Fatal(err)
			}
			ring, err := NewKeyring(v.MasterVersion, master)
			if err != nil {
				t.Fatal(err)
			}
			k := NewWithSalts(ring, kv)
			got, err := k.Open(v.Tenant, v.Record, v.Purpose, unhex(t, v.Sealed))
			if err != nil || !bytes.Equal(got, unhex(t, v.Plaintext)) {
				t.Fatalf("Open(sealed): got %x, %v, want %s", got, err, v.Plaintext)
			}
			if _, err := k.Open(v.Tenant, v.Record+"x", v.Purpose, unhex(t, v.Sealed)); !errors.Is(err, ErrOpen) {
				t.Fatalf("Open for another record: got %v, want ErrOpen", err)
			}
		})
	}
}
