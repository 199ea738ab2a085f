package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/proxy/admin"
)

// policyRevision runs `moltgate policy promote|rollback|status` against the admin API:
// promote makes the candidate set (policies.shadow.dir) live, rollback re-activates the
// revision before, status shows the live, previous and candidate revisions.
func policyRevision(ctx context.Context, verb string, args []string, env func(string) string, stdout, stderr io.Writer) (err error) {
	usage := "usage: moltgate policy " + verb + " [--admin-url URL] [--json]"
	if verb == "promote" {
		usage = "usage: moltgate policy promote [--revision R] [--admin-url URL] [--json]"
	}
	fs := newFlags("policy "+verb, usage, stderr)
	adminURL := fs.String("admin-url", defaultAdminURL(env), "admin listener URL (MOLTGATE_ADMIN_URL sets the default)")
	jsonOut := fs.Bool("json", false, "print JSON")
	var revision *string
	if verb == "promote" {
		revision = fs.String("revision", "", "the candidate revision to promote (as /readyz or status shows it); another is refused")
	}
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError{usage}
	}
	defer func() { err = adminHint(err, *adminURL) }()
	token, err := adminToken(env)
	if err != nil {
		return err
	}
	c := &admin.Client{BaseURL: *adminURL, Token: token, HTTP: &http.Client{Timeout: 2 * time.Minute}}
	var st policies.RevisionState
	switch verb {
	case "promote":
		st, err = c.PromotePolicy(ctx, *revision)
	case "rollback":
		st, err = c.RollbackPolicy(ctx)
	default:
		st, err = c.PolicyState(ctx)
	}
	if err != nil {
		return err
	}
	if *jsonOut {
		return printJSON(stdout, st)
	}
	source := "configured set"
	if st.Promoted {
		source = "promoted"
	}
	fmt.Fprintf(stdout, "live: %s (%s)\n", st.Live, source)
	if st.Previous != "" {
		fmt.Fprintf(stdout, "previous: %s (policy rollback re-activates it)\n", st.Previous)
	}
	if st.Candidate != "" {
		fmt.Fprintf(stdout, "candidate: %s\n", st.Candidate)
	}
	return nil
}
