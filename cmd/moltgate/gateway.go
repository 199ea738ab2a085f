package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/registry"
)

// gatewayUsage is the gateway command's short usage.
const gatewayUsage = "usage: moltgate gateway create|destroy|rotate-token|status|add|list|show|open|remove|member|api-token|allowlist|skills|upgrade … (moltgate gateway -h: its flags)"

// gatewayCommand is the CLI of the admin API's gateway endpoints.
func gatewayCommand(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) (err error) {
	fs := newFlags("gateway", gatewayUsage, stderr)
	adminURL := fs.String("admin-url", defaultAdminURL(env), "admin listener URL (MOLTGATE_ADMIN_URL sets the default)")
	// Subcommand flags are parsed by the same set, so they may come before or after the verb.
	id := fs.String("id", "", "gateway id (add, create)")
	tenant := fs.String("tenant", "", "tenant (add, create)")
	owner := fs.String("owner", "", "owner user id (add, create)")
	upstream := fs.String("upstream", "", "gateway URL (add)")
	mode := fs.String("auth-mode", "token", "upstream auth: token or trusted-proxy (add)")
	tokenFile := fs.String("token-file", "", "file holding the gateway's existing token (add; default: generate)")
	allow := fs.String("allow", "", "comma-separated tool names to allow (skills set)")
	deny := fs.String("deny", "", "comma-separated tool names to deny (skills set)")
	path := fs.String("path", "", "path on the gateway's host to open (open; default /)")
	name := fs.String("name", "", "what the token is for (api-token create)")
	ttl := fs.String("ttl", "", "how long the token lives, such as 720h (api-token create; default: until revoked)")
	jsonOut := fs.Bool("json", false, "print JSON")
	pf := newProvisionFlags(fs.FlagSet)
	uf := newUpgradeFlags(fs.FlagSet)
	rest, err := fs.parseInterleaved(args)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		return usageError{gatewayUsage}
	}
	if err := gatewayArgs(fs, rest); err != nil {
		return err
	}
	defer func() { err = adminHint(err, *adminURL) }()
	token, err := adminToken(env)
	if err != nil {
		return err
	}
	c := &admin.Client{BaseURL: *adminURL, Token: token, HTTP: &http.Client{Timeout: 30 * time.Second}}
	print := func(v any) error {
		if g, ok := v.(admin.Gateway); ok && !*jsonOut {
			return printGateway(stdout, g)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	verb, rest := rest[0], rest[1:]
	if ok, err := provisionCommand(ctx, verb, rest, pf, *id, *tenant, *owner, *jsonOut, c, stdout, stderr); ok {
		return err
	}
	if ok, err := upgradeCommand(ctx, verb, rest, uf, pf, *jsonOut, c, stdout, stderr); ok {
		return err
	}
	switch verb {
	case "add":
		req := admin.CreateRequest{ID: *id, Tenant: *tenant, Owner: *owner, Upstream: *upstream, AuthMode: registry.AuthMode(*mode)}
		if *tokenFile != "" {
			b, err := os.ReadFile(*tokenFile)
			if err != nil {
				return fmt.Errorf("token file: %w", err)
			}
			req.Token = strings.TrimSpace(string(b))
		}
		resp, err := c.Create(ctx, req)
		if err != nil {
			return err
		}
		if *jsonOut {
			return print(resp)
		}
		if err := printGateway(stdout, resp.Gateway); err != nil {
			return err
		}
		printTokenNote(stdout, resp)
		return nil
	case "open":
		l, err := c.Launch(ctx, rest[0], *path)
		if err != nil {
			return err
		}
		if *jsonOut {
			return print(l)
		}
		fmt.Fprintf(stdout, "%s\n", l.URL)
		fmt.Fprintf(stderr, "open it in a browser within %s (one use): it signs you in as the gateway's owner\n",
			time.Until(l.ExpiresAt).Round(time.Second))
		return nil
	case "list":
		gws, err := c.List(ctx)
		if err != nil {
			return err
		}
		if *jsonOut {
			return print(gws)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tTENANT\tOWNER\tMODE\tMEMBERS\tUPSTREAM")
		for _, g := range gws {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", g.ID, g.Tenant, g.Owner, g.AuthMode, len(g.Members), orDash(g.Upstream))
		}
		return tw.Flush()
	case "show":
		g, err := c.Get(ctx, rest[0])
		if err != nil {
			return err
		}
		if err := print(g); err != nil || *jsonOut {
			return err
		}
		// A provisioned gateway's image and drift, for whoever may read its provisioning
		// (issue 14).
		if p, err := c.ProvisionStatus(ctx, rest[0]); err == nil {
			printImage(stdout, p)
			printDrift(stdout, p)
		}
		return nil
	case "remove":
		if err := c.Delete(ctx, rest[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed %s\n", rest[0])
		return nil
	case "member":
		var g admin.Gateway
		if rest[0] == "add" {
			g, err = c.SetMember(ctx, rest[1], rest[2], rest[3])
		} else {
			g, err = c.RemoveMember(ctx, rest[1], rest[2])
		}
		if err != nil {
			return err
		}
		return print(g)
	case "api-token":
		if rest[0] == "revoke" {
			g, err := c.RevokeAPIToken(ctx, rest[1], rest[2])
			if err != nil {
				return err
			}
			return print(g)
		}
		made, err := c.CreateAPIToken(ctx, rest[1], admin.APITokenRequest{Name: *name, Role: rest[2], TTL: *ttl})
		if err != nil {
			return err
		}
		if *jsonOut {
			return print(made)
		}
		expires := "never (until revoked)"
		if made.APIToken.Expires != nil {
			expires = made.APIToken.Expires.Format(time.RFC3339)
		}
		fmt.Fprintf(stdout, "api token %s (%s, %s) of %s, expires %s\n\n"+
			"token (shown once; a machine client presents it as Authorization: Bearer to %s's host):\n%s\n",
			made.APIToken.ID, made.APIToken.Name, made.APIToken.Role, rest[1], expires, rest[1], made.Token)
		return nil
	case "allowlist":
		g, err := c.SetAllowlist(ctx, rest[1], rest[2:])
		if err != nil {
			return err
		}
		return print(g)
	case "skills":
		g, err := c.SetSkills(ctx, rest[1], registry.SkillRules{Allow: splitList(*allow), Deny: splitList(*deny)})
		if err != nil {
			return err
		}
		return print(g)
	}
	return usageError{fmt.Sprintf("unknown gateway command %q\n%s", verb, gatewayUsage)} // gatewayArgs let it through
}

// gatewayArgs checks a gateway command line before anything is asked of the admin API:
// a mistake in it is a usage error (exit 2), with the form the verb takes.
func gatewayArgs(fs *cliFlags, words []string) error {
	verb, rest := words[0], words[1:]
	forms := map[string]struct {
		n    func(int) bool
		form string
	}{
		"create":       {func(n int) bool { return n == 0 }, "create --id ID --tenant T --owner USER [--driver local|fly] [--image REF] [--no-wait]"},
		"destroy":      {func(n int) bool { return n == 1 }, "destroy ID [--no-wait]"},
		"rotate-token": {func(n int) bool { return n == 1 }, "rotate-token ID [--no-wait]"},
		"status":       {func(n int) bool { return n == 1 }, "status ID"},
		"upgrade":      {func(n int) bool { return n <= 1 }, upgradeForm},
		"add":          {func(n int) bool { return n == 0 }, "add --id ID --tenant T --owner USER --upstream URL [--auth-mode token|trusted-proxy] [--token-file F]"},
		"list":         {func(n int) bool { return n == 0 }, "list"},
		"show":         {func(n int) bool { return n == 1 }, "show ID"},
		"open":         {func(n int) bool { return n == 1 }, "open ID [--path /PATH]"},
		"remove":       {func(n int) bool { return n == 1 }, "remove ID"},
		"member":       {nil, "member add ID USER ROLE | member remove ID USER"},
		"api-token":    {nil, "api-token create ID ROLE --name NAME [--ttl 720h] | api-token revoke ID TOKEN-ID"},
		"allowlist":    {func(n int) bool { return n >= 2 && rest[0] == "set" }, "allowlist set ID [CIDR...]"},
		"skills":       {func(n int) bool { return n == 2 && rest[0] == "set" }, "skills set ID [--allow A,B] [--deny C,D]"},
	}
	f, ok := forms[verb]
	if !ok {
		return usageError{fmt.Sprintf("unknown gateway command %q\n%s", verb, gatewayUsage)}
	}
	switch verb {
	case "member":
		f.n = func(n int) bool { return n == 4 && rest[0] == "add" || n == 3 && rest[0] == "remove" }
	case "api-token":
		f.n = func(n int) bool { return n == 3 && (rest[0] == "create" || rest[0] == "revoke") }
	}
	if !f.n(len(rest)) {
		return usageError{"usage: moltgate gateway " + f.form}
	}
	required := map[string][]string{"add": {"id", "tenant", "owner", "upstream"}, "create": {"id", "tenant", "owner"},
		"upgrade": {"image"}}[verb]
	if verb == "api-token" && rest[0] == "create" {
		required = []string{"name"}
	}
	if err := fs.missing(required...); err != nil {
		return usageError{err.Error() + "\nusage: moltgate gateway " + f.form}
	}
	return nil
}

// printTokenNote prints the gateway token a create generated, once, with what to do with
// it, which depends on how moltgate authenticates to the gateway.
func printTokenNote(w io.Writer, resp admin.CreateResponse) {
	if resp.Token == "" {
		return
	}
	if resp.Gateway.AuthMode != registry.AuthTrustedProxy {
		fmt.Fprintf(w, "\ngateway token (shown once; configure the gateway with it as gateway.auth.token):\n%s\n", resp.Token)
		return
	}
	// A trusted-proxy gateway refuses to start with a token: this one is for clients only.
	fmt.Fprintf(w, "\nclient token (shown once): machine clients present it to moltgate (Authorization: Bearer)\n"+
		"and reach the gateway as user token:%s. Do not configure the gateway with it: a\n"+
		"trusted-proxy gateway has no token (it refuses to start with one). Configure it with\n"+
		"  gateway.auth.mode: trusted-proxy\n"+
		"  gateway.trustedProxies: [moltgate's address] (and gateway.auth.trustedProxy.allowLoopback: true if loopback)\n"+
		"  gateway.auth.trustedProxy: {userHeader: x-forwarded-user, requiredHeaders: [x-forwarded-proto],\n"+
		"                              allowUsers: [the users it serves, and token:%s]}\n"+
		"  gateway.auth.identityScopes: each user's operator scopes (moltgate caps them by role)\n"+
		"  gateway.controlUi.allowedOrigins: [the gateway's public origin], for its Control UI\n"+
		"(README: The Control UI)\n%s\n",
		resp.Gateway.ID, resp.Gateway.ID, resp.Token)
}

// defaultAdminURL is --admin-url's default: MOLTGATE_ADMIN_URL, else the default admin_listen.
func defaultAdminURL(env func(string) string) string {
	if u := env("MOLTGATE_ADMIN_URL"); u != "" {
		return u
	}
	return "http://127.0.0.1:9090"
}

// adminHint says what an operator can do when the admin API does not answer at all.
func adminHint(err error, adminURL string) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("no admin API at %s (connection refused): is `moltgate serve` running there? "+
			"(--admin-url or MOLTGATE_ADMIN_URL name another)", adminURL)
	}
	return err
}

// adminToken is MOLTGATE_ADMIN_TOKEN, else the development token file in the default data dir.
func adminToken(env func(string) string) (string, error) {
	if t := env("MOLTGATE_ADMIN_TOKEN"); t != "" {
		return t, nil
	}
	dir := env("MOLTGATE_DATA_DIR")
	if dir == "" {
		dir = "./data"
	}
	b, err := os.ReadFile(filepath.Join(dir, devAdminTokenFile))
	if err != nil {
		return "", fmt.Errorf("no admin token: set MOLTGATE_ADMIN_TOKEN (or run from the directory of a development `moltgate serve`)")
	}
	return strings.TrimSpace(string(b)), nil
}

func printGateway(w io.Writer, g admin.Gateway) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	upstream := g.Upstream
	if upstream == "" {
		upstream = "(shown to the gateway's administrators only)"
	}
	fmt.Fprintf(tw, "id\t%s\ntenant\t%s\nowner\t%s\nupstream\t%s\nauth mode\t%s\nrevision\t%d\n",
		g.ID, g.Tenant, g.Owner, upstream, g.AuthMode, g.Revision)
	for user, role := range g.Members {
		fmt.Fprintf(tw, "member\t%s (%s)\n", user, role)
	}
	for _, t := range g.APITokens {
		expires := "no expiry"
		if t.Expires != nil {
			expires = "expires " + t.Expires.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "api token\t%s (%s, %s, %s)\n", t.ID, t.Role, t.Name, expires)
	}
	fmt.Fprintf(tw, "allowlist\t%s\nskills allow\t%s\nskills deny\t%s\n",
		strings.Join(g.Allowlist, " "), strings.Join(g.Skills.Allow, ","), strings.Join(g.Skills.Deny, ","))
	return tw.Flush()
}

// sessionCommand is the CLI of the admin API's browser-session endpoints.
func sessionCommand(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) (err error) {
	const sessionUsage = "usage: moltgate session list [--gateway ID] [--user USER] | session revoke SESSION"
	fs := newFlags("session", sessionUsage, stderr)
	adminURL := fs.String("admin-url", defaultAdminURL(env), "admin listener URL (MOLTGATE_ADMIN_URL sets the default)")
	gateway := fs.String("gateway", "", "only this gateway's sessions (list)")
	user := fs.String("user", "", "only this user's sessions (list)")
	jsonOut := fs.Bool("json", false, "print JSON")
	rest, err := fs.parseInterleaved(args)
	if err != nil {
		return err
	}
	usage := usageError{sessionUsage}
	if len(rest) == 0 || !(rest[0] == "list" && len(rest) == 1 || rest[0] == "revoke" && len(rest) == 2) {
		return usage
	}
	defer func() { err = adminHint(err, *adminURL) }()
	token, err := adminToken(env)
	if err != nil {
		return err
	}
	c := &admin.Client{BaseURL: *adminURL, Token: token, HTTP: &http.Client{Timeout: 30 * time.Second}}
	switch {
	case rest[0] == "list" && len(rest) == 1:
		ss, err := c.Sessions(ctx, *gateway, *user)
		if err != nil {
			return err
		}
		if *jsonOut {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(ss)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SESSION\tGATEWAY\tUSER\tCREATED\tLAST SEEN\tEXPIRES")
		for _, s := range ss {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Gateway, s.UserID, s.Created.UTC().Format(time.RFC3339),
				s.LastSeen.UTC().Format(time.RFC3339), s.Expires.UTC().Format(time.RFC3339))
		}
		return tw.Flush()
	case rest[0] == "revoke" && len(rest) == 2:
		if err := c.RevokeSession(ctx, rest[1]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked %s\n", rest[1])
		return nil
	}
	return usage
}
