package store

import (
	"bytes"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// ErrConflict is returned by Swap when the stored value is not the one the caller expected:
// someone else changed it first. Re-read and decide again.
var ErrConflict = errors.New("store: value changed concurrently")

// Swap replaces bucket/key with new only if it currently holds old, atomically: the
// compare-and-swap that lets several writers (rotation, the admin API, other replicas) change
// one record without losing each other's writes. A nil old means "must be absent"; a nil new
// deletes the key. A mismatch returns ErrConflict and changes nothing.
func (b *Bolt) Swap(bucket, key string, old, new []byte) error {
	return b.update(opSwap, bucket, func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists([]byte(bucket))
		if err != nil {
			return fmt.Errorf("store: bucket %s: %w", bucket, err)
		}
		cur := bk.Get([]byte(key))
		if (old == nil) != (cur == nil) || !bytes.Equal(cur, old) {
			return ErrConflict
		}
		if new == nil {
			return bk.Delete([]byte(key))
		}
		return bk.Put([]byte(key), new)
	})
}
