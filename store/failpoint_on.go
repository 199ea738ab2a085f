//go:build moltgate_failpoints

package store

import "os"

// failpoint stalls, for ever and inside its transaction, every write to the bucket named by
// MOLTGATE_FAILPOINT_STORE_STALL: the end-to-end tests' way to show what a stuck disk does
// to the process (a deadline for the caller, a reason on /readyz, a bounded shutdown).
// Only binaries built with -tags moltgate_failpoints have it, as with etcd's gofail.
func failpoint(op int, bucket string) {
	if bucket != "" && op != opGet && op != opList && bucket == os.Getenv("MOLTGATE_FAILPOINT_STORE_STALL") {
		select {}
	}
}
