// Package store holds the key-value backends beneath the registry, keystore and provisioner
// state: one bbolt file for the embedded single-node default (Redis arrives with scale-out).
// Values are opaque bytes; callers own their encoding.
package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrNotFound is returned by Get for a key that is not stored.
var ErrNotFound = errors.New("store: not found")

// Bolt is a Store on one bbolt file. It is safe for concurrent use.
type Bolt struct {
	db *bolt.DB
}

// OpenBolt opens (creating if needed, mode 0600) the bbolt file at path. A second process
// opening the same file waits up to one second and then fails rather than share it.
func OpenBolt(path string) (*Bolt, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return &Bolt{db: db}, nil
}

// Close closes the file.
func (b *Bolt) Close() error { return b.db.Close() }

// Get returns a copy of the value under bucket/key, or ErrNotFound.
func (b *Bolt) Get(bucket, key string) ([]byte, error) {
	var out []byte
	err := b.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte(bucket))
		if bk == nil {
			return ErrNotFound
		}
		v := bk.Get([]byte(key))
		if v == nil {
			return ErrNotFound
		}
		out = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

// Put stores value under bucket/key, durably (fsync) before it returns.
func (b *Bolt) Put(bucket, key string, value []byte) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists([]byte(bucket))
		if err != nil {
			return fmt.Errorf("store: bucket %s: %w", bucket, err)
		}
		return bk.Put([]byte(key), value)
	})
}

// Delete removes bucket/key; deleting a missing key is not an error.
func (b *Bolt) Delete(bucket, key string) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte(bucket))
		if bk == nil {
			return nil
		}
		return bk.Delete([]byte(key))
	})
}

// ForEach calls fn for every key in bucket in key order, with a value that is only valid
// during the call. An error from fn stops the walk and is returned.
func (b *Bolt) ForEach(bucket string, fn func(key string, value []byte) error) error {
	return b.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte(bucket))
		if bk == nil {
			return nil
		}
		return bk.ForEach(func(k, v []byte) error { return fn(string(k), v) })
	})
}

// ForEachPrefix is ForEach over the keys that start with prefix. It seeks to the first
// one, so it costs the matching keys, not the bucket.
func (b *Bolt) ForEachPrefix(bucket, prefix string, fn func(key string, value []byte) error) error {
	return b.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte(bucket))
		if bk == nil {
			return nil
		}
		c := bk.Cursor()
		for k, v := c.Seek([]byte(prefix)); k != nil && bytes.HasPrefix(k, []byte(prefix)); k, v = c.Next() {
			if err := fn(string(k), v); err != nil {
				return err
			}
		}
		return nil
	})
}
