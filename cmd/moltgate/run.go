package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// exitCode is the process's exit status after err: 0 for none and for a help request, 2
// for a usage error, 1 for anything else.
func exitCode(err error) int {
	var u usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &u):
		return 2
	}
	return 1
}

const usage = `usage: moltgate <command> [flags]

  serve [--config FILE]          run the proxy and the admin listener
  config check FILE              validate a configuration file without serving
  gateway create --id ID --tenant T --owner USER [--driver local|fly] [--image REF] [--no-wait]
                                 provision a gateway (local: an OpenClaw process) and register it
  gateway destroy ID | rotate-token ID [--no-wait] | status ID   remove, re-token, show progress
  gateway upgrade ID --image REF | upgrade --all --image REF [--canary N] [--batch M]
                                 roll gateways (fly) to an image pinned by digest; a failed health check halts and rolls back
  gateway add --id ID --tenant T --owner USER --upstream URL [--auth-mode token|trusted-proxy] [--token-file F]
  gateway list | show ID | remove ID
  gateway open ID [--path /P]    print a one-time link that opens the gateway's Control UI (Clerk off only)
  session list [--gateway ID] [--user U] | session revoke SESSION   browser sessions
  gateway member add ID USER ROLE | gateway member remove ID USER
  gateway allowlist set ID [CIDR...]
  gateway skills set ID [--allow NAME,...] [--deny NAME,...]
  keys add --tenant T --provider P --secret-file F|-   store a provider key or channel credential, sealed
  keys list|show|verify|activate|revoke --tenant T [ID]    API-key lifecycle (keys help)
  keys rotate-master | rotate-tenant --tenant T | rotation   re-encrypt every record, resumable
  policy test [DIR]              run the *_test.rego files (default: the embedded policies)
  policy check DIR               load DIR as serve would: compile, type-check input, data read, tests
  policy fmt [-w] DIR            list (-w: rewrite) the .rego files opa fmt would change
  policy bundle build DIR -o FILE [--revision R]   check DIR, then write it as an OPA bundle
  policy bundle sign FILE --signing-key KEYFILE [--key-id ID] [--alg RS256]   sign it as opa build --signing-key does
  audit verify|archive|tail|query|pubkey …   read, check and archive audit events (audit help)
  version

The gateway and keys commands talk to the admin API: --admin-url (default http://127.0.0.1:9090) and
the admin token from MOLTGATE_ADMIN_TOKEN (default: read ./data/admin.token).
`

// run executes one command line. Only run and its helpers read flags and the environment.
func run(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{"no command"}
	}
	switch args[0] {
	case "serve":
		fs := newFlags("serve", "usage: moltgate serve [--config FILE]", stderr)
		cfgPath := fs.String("config", "", "configuration file (default: embedded defaults)")
		if err := fs.parse(args[1:]); err != nil {
			return err
		}
		cfg, err := loadConfig(*cfgPath, env)
		if err != nil {
			return err
		}
		// Before anything is opened: a missing secret must not stop a start half-way.
		if err := cfg.checkSecrets(env); err != nil {
			return err
		}
		return serve(ctx, cfg, env, stderr)
	case "config":
		if len(args) != 3 || args[1] != "check" {
			return usageError{"usage: moltgate config check FILE"}
		}
		cfg, err := loadConfig(args[2], env)
		if err != nil {
			return err
		}
		if err := cfg.checkSecrets(env); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: ok (%d secret references resolved; no value shown)\n", args[2], len(cfg.secretRefs()))
		return nil
	case "gateway":
		return gatewayCommand(ctx, args[1:], env, stdout, stderr)
	case "session":
		return sessionCommand(ctx, args[1:], env, stdout, stderr)
	case "policy":
		return policyCommand(ctx, args[1:], env, stdout, stderr)
	case "keys":
		return keysCommand(ctx, args[1:], env, os.Stdin, stdout, stderr)
	case "audit":
		return auditCommand(ctx, args[1:], env, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "moltgate", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError{fmt.Sprintf("unknown command %q", args[0])}
}

// cliFlags is one command's flag set. It prints nothing while it parses: -h and --help print
// the command's usage and flags (and exit 0), and any other mistake (--idd) becomes one usage
// error, naming it, with the command's short usage, which main prints once (exit 2).
type cliFlags struct {
	*flag.FlagSet
	usage  string
	stderr io.Writer
}

// newFlags returns the flag set of command name, whose short usage is usage.
func newFlags(name, usage string, stderr io.Writer) *cliFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &cliFlags{FlagSet: fs, usage: usage, stderr: stderr}
}

// failed classes an error of Parse: a help request prints the flags and stays flag.ErrHelp
// (exit 0); anything else is a usage error.
func (f *cliFlags) failed(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(f.stderr, "%s\n\nUsage of %s:\n", f.usage, f.Name())
		f.SetOutput(f.stderr)
		f.PrintDefaults()
		return err
	}
	return usageError{err.Error() + "\n" + f.usage}
}

// parse parses args, all flags.
func (f *cliFlags) parse(args []string) error {
	if err := f.Parse(args); err != nil {
		return f.failed(err)
	}
	return nil
}

// missing is the usage error of a command whose required flags are not all given, or nil;
// callers add the form the command takes.
func (f *cliFlags) missing(required ...string) error {
	var names []string
	for _, name := range required {
		if fl := f.Lookup(name); fl != nil && fl.Value.String() == "" {
			names = append(names, "--"+name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	return usageError{fmt.Sprintf("%s: %s required", f.Name(), strings.Join(names, ", "))}
}

// parseInterleaved parses flags wherever they stand among the positional words and returns
// the words in order ("gateway skills set gw1 --deny exec").
func (f *cliFlags) parseInterleaved(args []string) ([]string, error) {
	var words []string
	for {
		if err := f.Parse(args); err != nil {
			return nil, f.failed(err)
		}
		args = f.Args()
		if len(args) == 0 {
			return words, nil
		}
		if args[0] == "--" {
			return append(words, args[1:]...), nil
		}
		words, args = append(words, args[0]), args[1:]
	}
}

// splitList splits a comma-separated flag value.
func splitList(v string) []string {
	var out []string
	for f := range strings.SplitSeq(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
