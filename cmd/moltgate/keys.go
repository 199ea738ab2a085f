package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/proxy/admin"
)

const keysUsage = `usage: moltgate keys <verb> [flags]

  add --tenant T --provider P --secret-file F|- [--kind provider_key|channel_credential]
      [--label L] [--scope S,…] [--spend-cap-cents N]   store a key, sealed (F "-": stdin)
  list --tenant T                 the tenant's keys: provider, last four, fingerprint, state
  show|verify|activate --tenant T ID
  revoke --tenant T ID [--force]  (--force: the active key, leaving the provider without one)
  rotate-master [--wait]          new master key version; every record re-encrypted
  rotate-tenant --tenant T [--wait]   new keys for one tenant; its records re-encrypted
  rotation [--tenant T]           the current or last rotations (the tenant's with --tenant),
                                  records per key version

The secret is never taken from the command line, where ps and shell history would keep it.
Flags --admin-url and MOLTGATE_ADMIN_TOKEN as for the gateway commands.
`

// keysCommand is the CLI of the admin API's key and keystore endpoints.
func keysCommand(ctx context.Context, args []string, env func(string) string, stdin io.Reader, stdout, stderr io.Writer) (err error) {
	fs := newFlags("keys", "usage: moltgate keys add|list|show|verify|activate|revoke|rotate-master|rotate-tenant|rotation … (moltgate keys help)", stderr)
	adminURL := fs.String("admin-url", defaultAdminURL(env), "admin listener URL (MOLTGATE_ADMIN_URL sets the default)")
	tenant := fs.String("tenant", "", "tenant")
	provider := fs.String("provider", "", "provider: anthropic, openai, telegram, discord, whatsapp, … (add)")
	kind := fs.String("kind", "", "provider_key (default) or channel_credential (add)")
	label := fs.String("label", "", "label (add)")
	scope := fs.String("scope", "", "comma-separated scopes (add)")
	spendCap := fs.Int64("spend-cap-cents", 0, "monthly spend cap in cents, 0 none (add)")
	secretFile := fs.String("secret-file", "", `file holding the secret, "-" for stdin (add)`)
	force := fs.Bool("force", false, "revoke the active key (revoke)")
	wait := fs.Bool("wait", false, "wait until the rotation is done (rotate-master, rotate-tenant)")
	timeout := fs.Duration("timeout", 30*time.Minute, "how long --wait waits")
	jsonOut := fs.Bool("json", false, "print JSON")
	rest, err := fs.parseInterleaved(args)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		fmt.Fprint(stderr, keysUsage)
		return usageError{"usage: moltgate keys add|list|show|verify|activate|revoke|rotate-master|rotate-tenant|rotation …"}
	}
	verb, rest := rest[0], rest[1:]
	if verb == "help" {
		fmt.Fprint(stdout, keysUsage)
		return nil
	}
	switch verb {
	case "add", "list", "show", "verify", "activate", "revoke", "rotate-master", "rotate-tenant", "rotation":
	default:
		fmt.Fprint(stderr, keysUsage)
		return usageError{fmt.Sprintf("unknown keys verb %q", verb)}
	}
	needID := verb == "show" || verb == "verify" || verb == "activate" || verb == "revoke"
	switch {
	case needID && len(rest) != 1, !needID && len(rest) != 0:
		return usageError{"usage: moltgate keys " + verb + ": wrong number of arguments (see moltgate keys help)"}
	case *tenant == "" && verb != "rotate-master" && verb != "rotation":
		return usageError{"moltgate keys " + verb + ": --tenant is required"}
	case verb == "add":
		if err := fs.missing("provider"); err != nil {
			return usageError{err.Error() + "\nusage: moltgate keys add --tenant T --provider P --secret-file F|- [--kind K] [--label L] [--scope S,…] [--spend-cap-cents N]"}
		}
	}
	defer func() { err = adminHint(err, *adminURL) }()
	token, err := adminToken(env)
	if err != nil {
		return err
	}
	c := &admin.Client{BaseURL: *adminURL, Token: token, HTTP: &http.Client{Timeout: 60 * time.Second}}
	printKeys := func(keys ...keystore.APIKey) error {
		if *jsonOut {
			var v any = keys
			if len(keys) == 1 && verb != "list" {
				v = keys[0]
			}
			return printJSON(stdout, v)
		}
		return printKeyTable(stdout, keys)
	}
	var k keystore.APIKey
	switch verb {
	case "add":
		secret, err := readSecret(*secretFile, stdin)
		if err != nil {
			return err
		}
		k, err = c.AddKey(ctx, *tenant, admin.AddKeyRequest{Provider: *provider, Kind: keystore.Kind(*kind), Label: *label,
			Secret: string(secret), Scope: splitList(*scope), MonthlySpendCapCents: *spendCap})
		clear(secret)
		if err != nil {
			return err
		}
		return printKeys(k)
	case "list":
		keys, err := c.ListKeys(ctx, *tenant)
		if err != nil {
			return err
		}
		return printKeys(keys...)
	case "show":
		k, err = c.GetKey(ctx, *tenant, rest[0])
	case "verify":
		k, err = c.VerifyKey(ctx, *tenant, rest[0])
	case "activate":
		k, err = c.ActivateKey(ctx, *tenant, rest[0])
	case "revoke":
		k, err = c.RevokeKey(ctx, *tenant, rest[0], *force)
	case "rotate-master", "rotate-tenant", "rotation":
		var rot admin.Rotation
		switch verb {
		case "rotate-master":
			rot, err = c.RotateMaster(ctx)
		case "rotate-tenant":
			rot, err = c.RotateTenantKeys(ctx, *tenant)
		default:
			if *tenant != "" {
				rot, err = c.TenantKeyRotation(ctx, *tenant)
			} else {
				rot, err = c.KeyRotation(ctx)
			}
		}
		if err == nil && *wait && verb != "rotation" {
			of := "" // the master key's job
			if verb == "rotate-tenant" {
				of = *tenant
			}
			rot, err = waitForRotation(ctx, c, of, *timeout)
		}
		if err != nil {
			return err
		}
		if *jsonOut {
			return printJSON(stdout, rot)
		}
		// A tenant's rotation comes without record counts (they read every tenant's records).
		return printRotation(stdout, rot, verb != "rotation" || *tenant == "")
	}
	if err != nil {
		return err
	}
	return printKeys(k)
}

// readSecret reads a secret from a file or stdin ("-"): its first line, without surrounding
// white space. Errors never contain the secret.
func readSecret(path string, stdin io.Reader) ([]byte, error) {
	var data []byte
	var err error
	switch path {
	case "":
		return nil, usageError{"moltgate keys add: --secret-file is required (a file, or - for stdin)"}
	case "-":
		data, err = io.ReadAll(io.LimitReader(stdin, 16<<10))
	default:
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("secret: %w", err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	clear(data)
	line = strings.TrimSpace(line)
	if line == "" {
		return nil, errors.New("secret: empty")
	}
	return []byte(line), nil
}

// waitForRotation waits until tenant's rotation ("": the master key's) is done, the timeout
// passes or ctx ends.
func waitForRotation(ctx context.Context, c *admin.Client, tenant string, timeout time.Duration) (admin.Rotation, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rot, err := c.WaitRotation(ctx, tenant, 200*time.Millisecond)
	if err != nil && ctx.Err() != nil {
		return rot, fmt.Errorf("rotation not done after %s (it goes on in the server; see moltgate keys rotation)", timeout)
	}
	return rot, err
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printKeyTable(w io.Writer, keys []keystore.APIKey) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPROVIDER\tKIND\tSTATE\tLAST4\tFINGERPRINT\tSCOPE\tSPEND CAP\tLABEL")
	for _, k := range keys {
		spendCap := "-"
		if k.MonthlySpendCapCents > 0 {
			spendCap = fmt.Sprintf("%d.%02d/month", k.MonthlySpendCapCents/100, k.MonthlySpendCapCents%100)
		}
		last4 := k.Last4
		if last4 == "" {
			last4 = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Provider, k.Kind, k.State, last4, k.Fingerprint,
			orDash(strings.Join(k.Scope, ",")), spendCap, orDash(k.Label))
	}
	return tw.Flush()
}

// printRotation prints a line per job (every job of Jobs, else Job) and, with counts, the
// records per master version.
func printRotation(w io.Writer, rot admin.Rotation, counts bool) error {
	jobs := rot.Jobs
	if len(jobs) == 0 && rot.Job != nil {
		jobs = []keystore.Job{*rot.Job}
	}
	for _, j := range jobs {
		what := "master key version " + strconv.FormatUint(uint64(j.Master), 10)
		if j.Kind == "tenant" {
			what = "tenant " + j.Tenant + " salt version " + strconv.FormatUint(uint64(j.Salt), 10)
		}
		fmt.Fprintf(w, "rotation: %s to %s, %s, %d records re-encrypted", j.Kind, what, j.Phase, j.Resealed)
		if len(j.Retired) > 0 {
			fmt.Fprintf(w, ", retired master versions %v", j.Retired)
		}
		if j.Error != "" {
			fmt.Fprintf(w, ", last error: %s", j.Error)
		}
		fmt.Fprintln(w)
	}
	if len(jobs) == 0 {
		fmt.Fprintln(w, "rotation: none yet")
	}
	if !counts {
		return nil
	}
	fmt.Fprintf(w, "records: %d; per master version:", rot.Usage.Total)
	for _, v := range slices.Sorted(maps.Keys(rot.Usage.Master)) {
		fmt.Fprintf(w, " v%d=%d", v, rot.Usage.Master[v])
	}
	fmt.Fprintln(w)
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
