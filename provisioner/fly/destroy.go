package fly

import (
	"context"
	"errors"
	"fmt"
	"github.com/moltgate/moltgate/provisioner/retry"
	"log/slog"
	"net/http"

	fly "github.com/superfly/fly-go"
	"github.com/superfly/fly-go/flaps"
)

// Destroy removes the gateway's resources in the reverse order of their creation: its
// machines (each under its lease, killed, waited for until destroyed), volumes, IPs, then
// the app with its secrets. Whatever is already gone (404) counts as done, so a Destroy
// after a half-finished create, or a second Destroy, finishes the job. It returns nil only
// once the app is confirmed gone. An app another organization holds is never touched.
func (d *Driver) Destroy(ctx context.Context, gatewayID string) error {
	app, err := d.AppName(gatewayID)
	if err != nil {
		return err
	}
	if _, err := d.lookupApp(ctx, app); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return fmt.Errorf("fly: destroy %q: %w", app, err)
	}
	var machines []*fly.Machine
	err = d.call(ctx, callOpts{}, func(ctx context.Context) (err error) {
		machines, err = d.client.List(ctx, app, "")
		return err
	})
	if err != nil && statusOf(err) != http.StatusNotFound {
		return fmt.Errorf("fly: destroy %q: list machines: %w", app, err)
	}
	for _, m := range machines {
		if !m.IsActive() {
			continue
		}
		if err := d.destroyMachine(ctx, app, m.ID); err != nil {
			return err
		}
		d.log.LogAttrs(ctx, slog.LevelInfo, "fly: destroyed machine", slog.String("gateway", gatewayID), slog.String("machine", m.ID))
	}
	var vols []fly.Volume
	err = d.call(ctx, callOpts{}, func(ctx context.Context) (err error) {
		vols, err = d.client.GetVolumes(ctx, app)
		return err
	})
	if err != nil && statusOf(err) != http.StatusNotFound {
		return fmt.Errorf("fly: destroy %q: list volumes: %w", app, err)
	}
	for _, v := range vols {
		if err := d.deleteVolume(ctx, app, v.ID); err != nil {
			return fmt.Errorf("fly: destroy %q: %w", app, err)
		}
	}
	var ips *flaps.ListIPAssignmentsResponse
	err = d.call(ctx, callOpts{}, func(ctx context.Context) (err error) {
		ips, err = d.client.GetIPAssignments(ctx, app)
		return err
	})
	if err != nil && statusOf(err) != http.StatusNotFound {
		return fmt.Errorf("fly: destroy %q: list ips: %w", app, err)
	}
	if ips != nil {
		for _, ip := range ips.IPs {
			if err := d.deleteIP(ctx, app, ip.IP); err != nil {
				return fmt.Errorf("fly: destroy %q: %w", app, err)
			}
		}
	}
	err = d.call(ctx, callOpts{}, func(ctx context.Context) error {
		return d.client.DeleteApp(ctx, app)
	})
	if err != nil && statusOf(err) != http.StatusNotFound {
		return fmt.Errorf("fly: destroy %q: delete app: %w", app, err)
	}
	return d.confirmGone(ctx, gatewayID, app)
}

// destroyMachine kills and destroys one machine under its lease and waits until it is
// destroyed.
func (d *Driver) destroyMachine(ctx context.Context, app, id string) error {
	nonce, err := d.acquireLease(ctx, app, id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("fly: destroy machine %s: %w", id, err)
	}
	work, release := d.hold(ctx, app, id, nonce)
	defer release()
	err = d.call(work, callOpts{}, func(ctx context.Context) error {
		return d.client.Destroy(ctx, app, fly.RemoveMachineInput{ID: id, Kill: true}, nonce)
	})
	if err != nil && statusOf(err) != http.StatusNotFound {
		return leaseCause(work, fmt.Errorf("fly: destroy machine %s in %q: %w", id, app, err))
	}
	wctx, cancel := context.WithTimeout(work, d.cfg.StartTimeout)
	defer cancel()
	for {
		err := d.call(wctx, callOpts{timeout: d.cfg.WaitTimeout + d.cfg.RequestTimeout}, func(ctx context.Context) error {
			return d.client.Wait(ctx, app, id, flaps.WithWaitStates(fly.MachineStateDestroyed), flaps.WithWaitTimeout(d.cfg.WaitTimeout))
		})
		switch statusOf(err) {
		case http.StatusRequestTimeout:
			continue
		case http.StatusNotFound:
			return nil
		}
		if err != nil {
			return leaseCause(work, fmt.Errorf("fly: wait for machine %s in %q to be destroyed: %w", id, app, err))
		}
		return nil
	}
}

// confirmGone polls until the app answers 404, within StartTimeout: Fly may delete an app
// after answering 202.
func (d *Driver) confirmGone(ctx context.Context, gatewayID, app string) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.StartTimeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		_, err := d.lookupApp(ctx, app)
		if errors.Is(err, ErrNotFound) {
			d.log.LogAttrs(ctx, slog.LevelInfo, "fly: destroyed app", slog.String("gateway", gatewayID), slog.String("app", app))
			return nil
		}
		if err := retry.Sleep(ctx, retry.Backoff(attempt)); err != nil {
			return fmt.Errorf("fly: destroy %q: app still there: %w", app, err)
		}
	}
}
