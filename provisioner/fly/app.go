package fly

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/superfly/fly-go/flaps"
)

// App is a gateway's Fly app.
type App struct {
	Name string
	ID   string
	Org  string
}

// EnsureApp makes sure the gateway's app exists in the driver's organization. An app of
// that name already in the organization is adopted; one that another organization holds
// is ErrNameTaken. A create whose answer is lost is resolved by a lookup.
func (d *Driver) EnsureApp(ctx context.Context, gatewayID string) (App, error) {
	name, err := d.AppName(gatewayID)
	if err != nil {
		return App{}, err
	}
	app, err := d.lookupApp(ctx, name)
	if err == nil || !errors.Is(err, ErrNotFound) {
		return app, err
	}
	var created *flaps.App
	err = d.call(ctx, callOpts{kind: create}, func(ctx context.Context) (err error) {
		created, err = d.client.CreateApp(ctx, flaps.CreateAppRequest{Name: name, Org: d.cfg.Org})
		return err
	})
	switch status := statusOf(err); {
	case err == nil:
		d.log.LogAttrs(ctx, slog.LevelInfo, "fly: created app", slog.String("gateway", gatewayID), slog.String("app", name))
		return App{Name: name, ID: created.ID, Org: d.cfg.Org}, nil
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return App{}, d.notOurs(ctx, name)
	case status != http.StatusUnprocessableEntity && !errors.Is(err, ErrUnknownResult):
		return App{}, fmt.Errorf("fly: create app %q: %w", name, err)
	}
	// Taken, or perhaps created: ours if our organization has it.
	app, lerr := d.lookupApp(ctx, name)
	switch {
	case lerr == nil:
		d.log.LogAttrs(ctx, slog.LevelInfo, "fly: adopted app", slog.String("gateway", gatewayID), slog.String("app", name))
		return app, nil
	case errors.Is(lerr, ErrNotFound) && errors.Is(err, ErrUnknownResult):
		return App{}, fmt.Errorf("fly: create app %q: %w", name, err)
	case errors.Is(lerr, ErrNotFound):
		// Taken, yet invisible to our organization: someone else's.
		return App{}, fmt.Errorf("%w: %q is taken and not in organization %q", ErrNameTaken, name, d.cfg.Org)
	}
	return App{}, lerr
}

// lookupApp finds app name in the driver's organization: ErrNotFound when nobody has it,
// ErrNameTaken when another organization does.
func (d *Driver) lookupApp(ctx context.Context, name string) (App, error) {
	var app *flaps.App
	err := d.call(ctx, callOpts{}, func(ctx context.Context) (err error) {
		app, err = d.client.GetApp(ctx, name)
		return err
	})
	switch status := statusOf(err); {
	case err == nil && app.Organization.Slug != d.cfg.Org:
		return App{}, fmt.Errorf("%w: %q belongs to organization %q, not %q", ErrNameTaken, name, app.Organization.Slug, d.cfg.Org)
	case err == nil:
		return App{Name: app.Name, ID: app.ID, Org: app.Organization.Slug}, nil
	case status == http.StatusNotFound:
		return App{}, fmt.Errorf("fly: app %q: %w", name, ErrNotFound)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return App{}, d.notOurs(ctx, name)
	}
	return App{}, fmt.Errorf("fly: get app %q: %w", name, err)
}

// notOurs explains a 401 or 403 about app name: if the token can list its own
// organization's apps, the name is another organization's; if not, the token is refused.
func (d *Driver) notOurs(ctx context.Context, name string) error {
	err := d.call(ctx, callOpts{}, func(ctx context.Context) error {
		_, err := d.client.ListApps(ctx, flaps.ListAppsRequest{OrgSlug: d.cfg.Org})
		return err
	})
	switch status := statusOf(err); {
	case err == nil:
		return fmt.Errorf("%w: %q is held outside organization %q", ErrNameTaken, name, d.cfg.Org)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return fmt.Errorf("%w: organization %q: %w", ErrUnauthorized, d.cfg.Org, err)
	}
	return fmt.Errorf("fly: app %q: refused, and listing organization %q failed: %w", name, d.cfg.Org, err)
}
