//go:build moltgate_failpoints

package main

import (
	"fmt"
	"strconv"
)

// rotationFailpoint stalls, for ever, the key rotation job this process runs when it is about
// to store its Nth re-encrypted record, N from MOLTGATE_FAILPOINT_ROTATION_STALL: the
// end-to-end tests' way to hold a replica mid-rotation, its lease still renewed, until they
// kill it. Only binaries built with -tags moltgate_failpoints have it.
func rotationFailpoint(env func(string) string) (func(n int), error) {
	v := env("MOLTGATE_FAILPOINT_ROTATION_STALL")
	if v == "" {
		return nil, nil
	}
	at, err := strconv.Atoi(v)
	if err != nil || at < 1 {
		return nil, fmt.Errorf("MOLTGATE_FAILPOINT_ROTATION_STALL: %q: want a record count", v)
	}
	return func(n int) {
		if n == at {
			select {}
		}
	}, nil
}
