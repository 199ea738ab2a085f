package fly

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"

	fly "github.com/superfly/fly-go"

	"github.com/moltgate/moltgate/keystore"
)

// SetSecrets makes the gateway app's secrets exactly values (the gateway token under
// SecretGatewayToken and the tenant's provider keys): it sets those and unsets every other,
// in one call, and returns the app's secrets version, to pass to EnsureMachine so that the
// machine boots with them. Setting the same values again is harmless, so a call whose
// answer is lost is repeated. Values never appear in errors or logs.
func (d *Driver) SetSecrets(ctx context.Context, gatewayID string, values map[string]keystore.Secret) (uint64, error) {
	app, err := d.AppName(gatewayID)
	if err != nil {
		return 0, err
	}
	for _, name := range slices.Sorted(maps.Keys(values)) {
		if !envRE.MatchString(name) {
			return 0, fmt.Errorf("fly: set secrets of %q: %q is not a variable name", app, name)
		}
	}
	var current []fly.AppSecret
	err = d.call(ctx, callOpts{secret: true}, func(ctx context.Context) (err error) {
		current, err = d.client.ListAppSecrets(ctx, app, nil, false)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("fly: list secrets of %q: %w", app, err)
	}
	update := make(map[string]*string, len(values)+len(current))
	for _, s := range current {
		if _, keep := values[s.Name]; !keep {
			update[s.Name] = nil
		}
	}
	for name, v := range values {
		s := string(v)
		update[name] = &s
	}
	var res *fly.UpdateAppSecretsResp
	err = d.call(ctx, callOpts{secret: true}, func(ctx context.Context) (err error) {
		res, err = d.client.UpdateAppSecrets(ctx, app, update)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("fly: set secrets of %q: %w", app, err)
	}
	d.log.LogAttrs(ctx, slog.LevelInfo, "fly: set secrets", slog.String("gateway", gatewayID),
		slog.Int("set", len(values)), slog.Int("unset", len(update)-len(values)), slog.Uint64("secrets_version", res.Version))
	return res.Version, nil
}

// SecretNames lists the names (never the values) of the gateway app's secrets, sorted:
// for checks that what SetSecrets set is still there.
func (d *Driver) SecretNames(ctx context.Context, gatewayID string) ([]string, error) {
	app, err := d.AppName(gatewayID)
	if err != nil {
		return nil, err
	}
	var current []fly.AppSecret
	err = d.call(ctx, callOpts{secret: true}, func(ctx context.Context) (err error) {
		current, err = d.client.ListAppSecrets(ctx, app, nil, false)
		return err
	})
	if err != nil {
		if statusOf(err) == http.StatusNotFound {
			return nil, fmt.Errorf("fly: app %q: %w", app, ErrNotFound)
		}
		return nil, fmt.Errorf("fly: list secrets of %q: %w", app, err)
	}
	names := make([]string, len(current))
	for i, s := range current {
		names[i] = s.Name
	}
	slices.Sort(names)
	return names, nil
}
