package main

import (
	"context"
	"fmt"
	"io"

	"github.com/moltgate/moltgate/policies"
)

const policyUsage = "usage: moltgate policy test [--min-coverage N] [DIR] | check DIR | fmt [-w] DIR | bundle build|sign ... | eval --input FILE [--dir DIR] [--data FILE] [--explain MODE] | promote [--revision R] | rollback | status"

// policyCommand runs `moltgate policy SUBCOMMAND ...`: the policy author's tools. Each
// subcommand is one function; they share nothing but the usage line.
func policyCommand(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{policyUsage}
	}
	switch args[0] {
	case "bundle":
		return policyBundle(ctx, args[1:], stdout)
	case "check":
		return policyCheck(ctx, args[1:], stdout)
	case "fmt":
		return policyFmt(args[1:], stdout)
	case "test":
		return policyTest(ctx, args[1:], stdout, stderr)
	case "promote", "rollback", "status":
		return policyRevision(ctx, args[0], args[1:], env, stdout, stderr)
	case "eval":
		return policyEval(ctx, args[1:], stdout)
	}
	return usageError{policyUsage}
}

// policyCheck loads DIR as serve would (compile, schema, its own tests) and prints its revision.
func policyCheck(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return usageError{policyUsage}
	}
	e, err := policies.New(ctx, policies.Config{Dir: args[0]}, nil, nil)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ok: revision %s\n", e.Revision())
	return nil
}

// policyFmt lists the files of DIR that `opa fmt` would change, or rewrites them with -w.
func policyFmt(args []string, stdout io.Writer) error {
	if len(args) < 1 || len(args) > 2 || (len(args) == 2 && args[0] != "-w") {
		return usageError{policyUsage}
	}
	write := len(args) == 2
	changed, err := policies.Format(args[len(args)-1], write)
	for _, p := range changed {
		fmt.Fprintln(stdout, p)
	}
	if err != nil || write || len(changed) == 0 {
		return err
	}
	return fmt.Errorf("policy fmt: %d files not formatted", len(changed))
}
