//go:build !moltgate_failpoints

package store

// failpoint is a no-op in every build but the tests' (see failpoint_on.go).
func failpoint(op int, bucket string) {}
