package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/moltgate/moltgate/provisioner"
	"github.com/moltgate/moltgate/proxy/admin"
)

// upgradeFlags are the flags of `moltgate gateway upgrade`; --image and --timeout are the
// provisioning verbs'.
type upgradeFlags struct {
	all           *bool
	canary, batch *int
}

func newUpgradeFlags(fs *flag.FlagSet) *upgradeFlags {
	return &upgradeFlags{
		all:    fs.Bool("all", false, "upgrade every gateway whose driver runs images (upgrade)"),
		canary: fs.Int("canary", 0, "gateways upgraded first, alone (upgrade --all)"),
		batch:  fs.Int("batch", 1, "gateways per later batch (upgrade --all)"),
	}
}

const upgradeForm = "upgrade ID --image REF | upgrade --all --image REF [--canary N] [--batch M]"

// upgradeCommand runs `gateway upgrade`: one gateway, or the fleet with --all. It waits
// for the end (up to --timeout), printing each gateway's change, and reports whether verb
// was upgrade.
func upgradeCommand(ctx context.Context, verb string, rest []string, uf *upgradeFlags, pf *provisionFlags, jsonOut bool,
	c *admin.Client, stdout, stderr io.Writer) (bool, error) {
	if verb != "upgrade" {
		return false, nil
	}
	if (len(rest) == 1) == *uf.all || *uf.canary < 0 || *uf.batch < 1 {
		return true, usageError{"usage: moltgate gateway " + upgradeForm}
	}
	if err := provisioner.PinnedImage(*pf.image); err != nil {
		return true, usageError{"--" + err.Error()} // "--image: …"
	}
	// The call lasts as long as the upgrade: no client timeout but --timeout.
	wc := *c
	wc.HTTP = &http.Client{}
	ctx, cancel := context.WithTimeout(ctx, *pf.timeout)
	defer cancel()
	done := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		watchUpgrades(ctx, &wc, done, stderr)
	}()
	var (
		out any
		err error
	)
	if *uf.all {
		fmt.Fprintf(stderr, "upgrading the fleet to %s (canary %d, batches of %d)\n", *pf.image, *uf.canary, *uf.batch)
		out, err = wc.UpgradeFleet(ctx, provisioner.FleetSpec{Image: *pf.image, Canary: *uf.canary, Batch: *uf.batch})
	} else {
		fmt.Fprintf(stderr, "upgrading %s to %s\n", rest[0], *pf.image)
		out, err = wc.Upgrade(ctx, rest[0], *pf.image)
	}
	close(done)
	<-watched
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w: the upgrade stopped where it was; the same command resumes it", err)
		}
		return true, err
	}
	if jsonOut {
		return true, printJSON(stdout, out)
	}
	switch v := out.(type) {
	case provisioner.Fleet:
		n := 0
		for _, b := range v.Batches {
			n += len(b)
		}
		fmt.Fprintf(stdout, "fleet upgraded to %s: %d gateways in %d batches\n", v.Spec.Image, n, len(v.Batches))
	case admin.Provision:
		fmt.Fprintf(stdout, "%s runs %s and is healthy\n", v.Spec.ID, v.Image)
	}
	return true, nil
}

// watchUpgrades prints each gateway's upgrade as it changes (state, image digest), polling
// the fleet view until done is closed, and once more then.
func watchUpgrades(ctx context.Context, c *admin.Client, done <-chan struct{}, stderr io.Writer) {
	start := time.Now()
	var seen map[string]string // nil until the first answer: the baseline, not printed
	for last := false; ; {
		if v, err := c.Fleet(ctx); err == nil {
			now := map[string]string{}
			for _, g := range v.Gateways {
				line := orDash(g.Digest)
				if g.Upgrade != nil {
					line = fmt.Sprintf("%-12s %s", g.Upgrade.State, orDash(g.Digest))
					if g.Upgrade.Error != "" {
						line += " (" + g.Upgrade.Error + ")"
					}
				}
				if seen != nil && seen[g.ID] != line {
					fmt.Fprintf(stderr, "  [%6.1fs] %-16s %s\n", time.Since(start).Seconds(), g.ID, line)
				}
				now[g.ID] = line
			}
			seen = now
		}
		if last {
			return
		}
		t := time.NewTimer(500 * time.Millisecond)
		select {
		case <-done:
			last = true
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		t.Stop()
	}
}

// printImage prints the image a provisioned gateway runs, its digest, and its last upgrade.
func printImage(w io.Writer, p admin.Provision) {
	if p.Spec.Image != "" {
		fmt.Fprintf(w, "image\t%s\n", p.Spec.Image)
	}
	if p.Image != "" {
		fmt.Fprintf(w, "digest\t%s (running)\n", provisioner.Digest(p.Image))
	}
	if u := p.Upgrade; u != nil {
		fmt.Fprintf(w, "upgrade\t%s to %s, from %s", u.State, provisioner.Digest(u.Image), orDash(provisioner.Digest(u.Previous)))
		if u.Error != "" {
			fmt.Fprintf(w, " (%s)", u.Error)
		}
		fmt.Fprintln(w)
	}
}
