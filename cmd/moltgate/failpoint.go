//go:build !moltgate_failpoints

package main

// rotationFailpoint is a no-op in every build but the tests' (see failpoint_on.go).
func rotationFailpoint(env func(string) string) (func(n int), error) { return nil, nil }
