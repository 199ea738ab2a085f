// Package store holds the key-value backends beneath the registry, keystore and provisioner
// state: one bbolt file for the embedded single-node default, Redis for many replicas.
// Values are opaque bytes; callers own their encoding.
//
// Invariants, the same on both backends:
//   - A callback of ForEach or ForEachPrefix runs on a snapshot, after the read has ended, so
//     it may call the store. (Inside a bbolt read transaction, a second one in the same
//     goroutine deadlocks as soon as a writer grows the file: issue 15.)
//   - Every operation has a deadline (Config.Timeout). One that misses it returns ErrTimeout
//     and is reported by Stuck until it ends.
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

// ErrLocked is returned by OpenBolt for a file another process holds open.
var ErrLocked = errors.New("held by another process")

// Bolt is a Store on one bbolt file. It is safe for concurrent use.
type Bolt struct {
	db *bolt.DB
	g  *guard
}

// BoltConfig configures the bbolt backend.
type BoltConfig struct {
	// Timeout bounds one operation. Default DefaultTimeout (5s).
	Timeout time.Duration
}

// OpenBolt opens the bbolt file at path with the default configuration.
func OpenBolt(path string) (*Bolt, error) { return OpenBoltConfig(path, BoltConfig{}) }

// OpenBoltConfig opens (creating if needed, mode 0600) the bbolt file at path. A second
// process opening the same file waits up to one second and then fails rather than share it.
func OpenBoltConfig(path string, cfg BoltConfig) (*Bolt, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		// bbolt waited for the file's lock: another process has it open.
		return nil, fmt.Errorf("store: open %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return &Bolt{db: db, g: newGuard(cfg.Timeout)}, nil
}

// Close closes the file. It waits for operations in flight, up to the timeout: a stuck
// one makes it return ErrTimeout and leaves the file to the process's exit.
func (b *Bolt) Close() error { return b.g.run(opClose, "", b.db.Close) }

// Stuck returns an error naming the operations running longer than the timeout, or nil.
func (b *Bolt) Stuck() error { return b.g.stuck() }

func (b *Bolt) view(op int, bucket string, fn func(tx *bolt.Tx) error) error {
	return b.g.run(op, bucket, func() error {
		return b.db.View(func(tx *bolt.Tx) error {
			failpoint(op, bucket)
			return fn(tx)
		})
	})
}

func (b *Bolt) update(op int, bucket string, fn func(tx *bolt.Tx) error) error {
	return b.g.run(op, bucket, func() error {
		return b.db.Update(func(tx *bolt.Tx) error {
			failpoint(op, bucket)
			return fn(tx)
		})
	})
}

// Get returns a copy of the value under bucket/key, or ErrNotFound.
func (b *Bolt) Get(bucket, key string) ([]byte, error) {
	var out []byte
	err := b.view(opGet, bucket, func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte(bucket))
		if bk == nil {
			return ErrNotFound
		}
		v := bk.Get([]byte(key))
		if v == nil {
			return ErrNotFound
		}
		out = bytes.Clone(v)
		return nil
	})
	return out, err
}

// Put stores value under bucket/key, durably (fsync) before it returns.
func (b *Bolt) Put(bucket, key string, value []byte) error {
	return b.update(opPut, bucket, func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists([]byte(bucket))
		if err != nil {
			return fmt.Errorf("store: bucket %s: %w", bucket, err)
		}
		return bk.Put([]byte(key), value)
	})
}

// Delete removes bucket/key; deleting a missing key is not an error.
func (b *Bolt) Delete(bucket, key string) error {
	return b.update(opDelete, bucket, func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte(bucket))
		if bk == nil {
			return nil
		}
		return bk.Delete([]byte(key))
	})
}

// ForEach calls fn for every key in bucket in key order, on a snapshot read before the
// first call: fn may call the store. An error from fn stops the walk and is returned.
func (b *Bolt) ForEach(bucket string, fn func(key string, value []byte) error) error {
	return b.ForEachPrefix(bucket, "", fn)
}

// ForEachPrefix is ForEach over the keys that start with prefix. It seeks to the first
// one, so it costs the matching keys, not the bucket.
func (b *Bolt) ForEachPrefix(bucket, prefix string, fn func(key string, value []byte) error) error {
	type entry struct {
		k string
		v []byte
	}
	var all []entry
	err := b.view(opList, bucket, func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte(bucket))
		if bk == nil {
			return nil
		}
		c := bk.Cursor()
		for k, v := c.Seek([]byte(prefix)); k != nil && bytes.HasPrefix(k, []byte(prefix)); k, v = c.Next() {
			all = append(all, entry{string(k), bytes.Clone(v)})
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, e := range all {
		if err := fn(e.k, e.v); err != nil {
			return err
		}
	}
	return nil
}
