// Command moltgate is the policy-driven zero-trust edge proxy in front of tenants' OpenClaw
// gateways, and the CLI of its admin API. main only wires: every subcommand is run().
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if code := exitCode(err); code != 0 {
		fmt.Fprintln(os.Stderr, "moltgate:", err)
		os.Exit(code)
	}
}
