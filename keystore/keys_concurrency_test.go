package keystore

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/moltgate/moltgate/internal/testenv"
)

// TestKeysConcurrentAddsWhileSyncing is issue 15's hang, on each backend: four tenants add
// 8 KiB keys in parallel (growing the file) while every change notifies a subscriber that
// reads the tenant's active keys, as the policy engine's key sync does, and other goroutines
// list keys. On bbolt this hung every store call of every tenant after a few adds.
func TestKeysConcurrentAddsWhileSyncing(t *testing.T) {
	for name, open := range backends() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			kv := open(t)
			keys, err := NewKeys(KeysConfig{Keystore: saltedKeystore(t, kv), KV: kv, Audit: &recorder{}})
			if err != nil {
				t.Fatal(err)
			}
			var syncs sync.Map // tenant → number of keys seen by the last sync
			keys.Subscribe(func(_ context.Context, tenant string) {
				all, err := keys.List(tenant)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := keys.Active(tenant); err != nil {
					t.Error(err)
				}
				syncs.Store(tenant, len(all))
			})
			const tenants, adds = 4, 40
			var wg sync.WaitGroup
			stop := make(chan struct{})
			var listers sync.WaitGroup
			for i := range tenants {
				tenant := fmt.Sprintf("tenant-%d", i)
				wg.Go(func() {
					for range adds {
						secret := bytes.Repeat([]byte("s"), 8192)
						if _, err := keys.Add(t.Context(), AddRequest{Tenant: tenant, Provider: "anthropic", Secret: secret}); err != nil {
							t.Error(err)
							return
						}
					}
				})
				listers.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						if _, err := keys.List(tenant); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			testenv.WaitOrDump(t, &wg, 2*time.Minute)
			close(stop)
			testenv.WaitOrDump(t, &listers, time.Minute)
			for i := range tenants {
				tenant := fmt.Sprintf("tenant-%d", i)
				all, err := keys.List(tenant)
				if err != nil || len(all) != adds {
					t.Fatalf("%s: got %d keys, %v, want %d", tenant, len(all), err, adds)
				}
				if n, _ := syncs.Load(tenant); n != adds {
					t.Fatalf("%s: last sync saw %v keys, want %d", tenant, n, adds)
				}
			}
		})
	}
}
