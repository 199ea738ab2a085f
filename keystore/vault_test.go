package keystore_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"testing"

	vault "github.com/hashicorp/vault/api"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/keystore/vaulttest"
	"github.com/moltgate/moltgate/store"
)

func vaultClient(t *testing.T, addr, token string) *vault.Client {
	t.Helper()
	c, err := vault.NewClient(&vault.Config{Address: addr, MaxRetries: 0})
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	return c
}

func TestVaultTransitSource(t *testing.T) {
	fake := vaulttest.New(t, "s.test-token")
	kv, err := store.OpenBolt(t.TempDir() + "/kv.db")
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	src := keystore.VaultTransitSource{Client: vaultClient(t, fake.URL, "s.test-token"), Key: "moltgate-master", KV: kv}
	ctx := t.Context()

	if _, err := src.Load(ctx); err == nil {
		t.Fatal("load with nothing stored succeeded")
	}
	if created, err := src.Init(ctx); err != nil || !created {
		t.Fatalf("init: %v, %v", created, err)
	}
	if created, _ := src.Init(ctx); created {
		t.Fatal("second init created another version")
	}
	keys, err := src.Load(ctx)
	if err != nil || len(keys) != 1 || len(keys[1]) != keystore.KeySize {
		t.Fatalf("load: %d keys, %v", len(keys), err)
	}
	// Only the wrapped form is stored.
	wrapped, err := kv.Get("keystore.master", "0000000001")
	if err != nil || !strings.HasPrefix(string(wrapped), "vault:v1:") {
		t.Fatalf("stored form: %q, %v", wrapped, err)
	}
	if bytes.Contains(wrapped, keys[1]) || strings.Contains(string(wrapped), hex.EncodeToString(keys[1])) {
		t.Fatal("the stored master key is not wrapped")
	}

	// A seal under v1 still opens after Vault rotates its own transit key and we add v2.
	ring, _ := keystore.NewKeyringFrom(keys)
	sealed, _ := keystore.NewWithSalts(ring, kv).Seal("t", "r", "p", []byte("x"))
	fake.RotateKey("moltgate-master")
	v, k2, err := src.AddVersion(ctx)
	if err != nil || v != 2 || bytes.Equal(k2, keys[1]) {
		t.Fatalf("add version: %d, %v", v, err)
	}
	if w2, _ := kv.Get("keystore.master", "0000000002"); !strings.HasPrefix(string(w2), "vault:v2:") {
		t.Fatalf("v2 wrapped under transit key version 2: got %.9s", w2)
	}
	keys, err = src.Load(ctx)
	if err != nil || len(keys) != 2 || !bytes.Equal(keys[2], k2) {
		t.Fatalf("reload: %d keys, %v", len(keys), err)
	}
	ring2, _ := keystore.NewKeyringFrom(keys)
	if got, err := keystore.NewWithSalts(ring2, kv).Open("t", "r", "p", sealed); err != nil || string(got) != "x" {
		t.Fatalf("open after restart from vault: %v", err)
	}

	// Faults: Vault down, wrong token, a tampered wrapped key. Start fails closed.
	fake.FailNext(http.StatusServiceUnavailable)
	if _, err := src.Load(ctx); err == nil {
		t.Fatal("load through a 503 succeeded")
	}
	bad := keystore.VaultTransitSource{Client: vaultClient(t, fake.URL, "s.wrong"), Key: "moltgate-master", KV: kv}
	var re *vault.ResponseError
	if _, err := bad.Load(ctx); !errors.As(err, &re) || re.StatusCode != http.StatusForbidden {
		t.Fatalf("wrong token: got %v, want a 403 ResponseError", err)
	}
	tampered := []byte(strings.Replace(string(wrapped), "vault:v1:A", "vault:v1:B", 1))
	if bytes.Equal(tampered, wrapped) {
		tampered = append(bytes.Clone(wrapped[:len(wrapped)-4]), "AAA="...)
	}
	if err := kv.Put("keystore.master", "0000000001", tampered); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Load(ctx); err == nil {
		t.Fatal("tampered wrapped key loaded")
	} else if strings.Contains(err.Error(), hex.EncodeToString(keys[1])) {
		t.Fatal("error contains key material")
	}
	if fake.Calls("decrypt") < 3 || fake.Calls("encrypt") != 2 {
		t.Fatalf("calls: decrypt %d, encrypt %d", fake.Calls("decrypt"), fake.Calls("encrypt"))
	}
}

func TestVaultRotateMaster(t *testing.T) {
	fake := vaulttest.New(t, "tok")
	kv, err := store.OpenBolt(t.TempDir() + "/kv.db")
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	src := keystore.VaultTransitSource{Client: vaultClient(t, fake.URL, "tok"), Key: "mk", KV: kv}
	if _, err := src.Init(t.Context()); err != nil {
		t.Fatal(err)
	}
	keys, _ := src.Load(t.Context())
	ring, _ := keystore.NewKeyringFrom(keys)
	ks := keystore.NewWithSalts(ring, kv)
	aud := &nopAudit{}
	km, _ := keystore.NewKeys(keystore.KeysConfig{Keystore: ks, KV: kv, Audit: aud})
	k, err := km.Add(t.Context(), keystore.AddRequest{Tenant: "t1", Provider: "openai", Secret: keystore.Secret("sk-proj-0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	rot, _ := keystore.NewRotator(keystore.RotatorConfig{Keystore: ks, KV: kv, Source: src, Targets: []keystore.Target{km}})
	if _, err := rot.StartMaster(t.Context()); err != nil {
		t.Fatal(err)
	}
	job, err := rot.RunJob(t.Context(), "")
	if err != nil || len(job.Retired) != 1 {
		t.Fatalf("job: %+v, %v", job, err)
	}
	if _, err := kv.Get("keystore.master", "0000000001"); err == nil {
		t.Fatal("retired wrapped version still stored")
	}
	keys, _ = src.Load(t.Context())
	ring2, _ := keystore.NewKeyringFrom(keys)
	km2, _ := keystore.NewKeys(keystore.KeysConfig{Keystore: keystore.NewWithSalts(ring2, kv), KV: kv, Audit: aud})
	o, _ := keystore.NewOpener(km2, audit.Actor{Kind: "service", ID: "test"}, keystore.ReasonProvision, aud)
	if s, err := o.Open(t.Context(), "t1", k.ID); err != nil || string(s) != "sk-proj-0123456789abcdef" {
		t.Fatalf("open after vault rotation: %v", err)
	}
}
