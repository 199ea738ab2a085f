package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/registry"
)

// gatewayCommand is the CLI of the admin API's gateway endpoints.
func gatewayCommand(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	fs := newFlags("gateway", stderr)
	adminURL := fs.String("admin-url", "http://127.0.0.1:9090", "admin listener URL")
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
	jsonOut := fs.Bool("json", false, "print JSON")
	pf := newProvisionFlags(fs)
	rest, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		return usageError{"usage: moltgate gateway create|destroy|rotate-token|status|add|list|show|open|remove|member|allowlist|skills …"}
	}
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
	need := func(n int, form string) error {
		if len(rest) != n {
			return usageError{"usage: moltgate gateway " + form}
		}
		return nil
	}
	if ok, err := provisionCommand(ctx, verb, rest, pf, *id, *tenant, *owner, *jsonOut, c, stdout, stderr); ok {
		return err
	}
	switch verb {
	case "add":
		if err := need(0, "add --id ID --tenant T --owner USER --upstream URL [--auth-mode token|trusted-proxy] [--token-file F]"); err != nil {
			return err
		}
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
		if resp.Token != "" {
			fmt.Fprintf(stdout, "\ngateway token (shown once; configure the gateway with it):\n%s\n", resp.Token)
		}
		return nil
	case "open":
		if err := need(1, "open ID [--path /PATH]"); err != nil {
			return err
		}
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
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", g.ID, g.Tenant, g.Owner, g.AuthMode, len(g.Members), g.Upstream)
		}
		return tw.Flush()
	case "show":
		if err := need(1, "show ID"); err != nil {
			return err
		}
		g, err := c.Get(ctx, rest[0])
		if err != nil {
			return err
		}
		return print(g)
	case "remove":
		if err := need(1, "remove ID"); err != nil {
			return err
		}
		if err := c.Delete(ctx, rest[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed %s\n", rest[0])
		return nil
	case "member":
		switch {
		case len(rest) == 4 && rest[0] == "add":
			g, err := c.SetMember(ctx, rest[1], rest[2], rest[3])
			if err != nil {
				return err
			}
			return print(g)
		case len(rest) == 3 && rest[0] == "remove":
			g, err := c.RemoveMember(ctx, rest[1], rest[2])
			if err != nil {
				return err
			}
			return print(g)
		}
		return usageError{"usage: moltgate gateway member add ID USER ROLE | member remove ID USER"}
	case "allowlist":
		if len(rest) < 2 || rest[0] != "set" {
			return usageError{"usage: moltgate gateway allowlist set ID [CIDR...]"}
		}
		g, err := c.SetAllowlist(ctx, rest[1], rest[2:])
		if err != nil {
			return err
		}
		return print(g)
	case "skills":
		if len(rest) != 2 || rest[0] != "set" {
			return usageError{"usage: moltgate gateway skills set ID [--allow A,B] [--deny C,D]"}
		}
		g, err := c.SetSkills(ctx, rest[1], registry.SkillRules{Allow: splitList(*allow), Deny: splitList(*deny)})
		if err != nil {
			return err
		}
		return print(g)
	}
	return usageError{fmt.Sprintf("unknown gateway command %q", verb)}
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
	fmt.Fprintf(tw, "id\t%s\ntenant\t%s\nowner\t%s\nupstream\t%s\nauth mode\t%s\nrevision\t%d\n",
		g.ID, g.Tenant, g.Owner, g.Upstream, g.AuthMode, g.Revision)
	for user, role := range g.Members {
		fmt.Fprintf(tw, "member\t%s (%s)\n", user, role)
	}
	fmt.Fprintf(tw, "allowlist\t%s\nskills allow\t%s\nskills deny\t%s\n",
		strings.Join(g.Allowlist, " "), strings.Join(g.Skills.Allow, ","), strings.Join(g.Skills.Deny, ","))
	return tw.Flush()
}

// sessionCommand is the CLI of the admin API's browser-session endpoints.
func sessionCommand(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	fs := newFlags("session", stderr)
	adminURL := fs.String("admin-url", "http://127.0.0.1:9090", "admin listener URL")
	gateway := fs.String("gateway", "", "only this gateway's sessions (list)")
	user := fs.String("user", "", "only this user's sessions (list)")
	jsonOut := fs.Bool("json", false, "print JSON")
	rest, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	usage := usageError{"usage: moltgate session list [--gateway ID] [--user USER] | session revoke SESSION"}
	if len(rest) == 0 {
		return usage
	}
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
