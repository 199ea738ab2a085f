package fly

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"

	fly "github.com/superfly/fly-go"
)

// Volume is a gateway's data volume.
type Volume struct {
	ID        string
	Name      string
	Region    string
	SizeGB    int
	Encrypted bool
}

// EnsureVolume makes sure the gateway's app has one encrypted data volume. Volume names
// are not unique on Fly, so it looks the volume up by name first, resolves a create whose
// answer is lost by another lookup, and releases unattached duplicates a blind retry made.
func (d *Driver) EnsureVolume(ctx context.Context, gatewayID string) (Volume, error) {
	app, err := d.AppName(gatewayID)
	if err != nil {
		return Volume{}, err
	}
	v, err := d.findVolume(ctx, gatewayID, app)
	if err == nil || !errors.Is(err, ErrNotFound) {
		return v, err
	}
	size, encrypted := d.cfg.VolumeSizeGB, true
	var created *fly.Volume
	err = d.call(ctx, callOpts{kind: create}, func(ctx context.Context) (err error) {
		created, err = d.client.CreateVolume(ctx, app, fly.CreateVolumeRequest{
			Name: volumeName, Region: d.cfg.Region, SizeGb: &size, Encrypted: &encrypted,
		})
		return err
	})
	switch {
	case err == nil:
		d.log.LogAttrs(ctx, slog.LevelInfo, "fly: created volume", slog.String("gateway", gatewayID), slog.String("volume", created.ID))
		return volumeOf(*created)
	case errors.Is(err, ErrUnknownResult):
		v, lerr := d.findVolume(ctx, gatewayID, app)
		if errors.Is(lerr, ErrNotFound) {
			return Volume{}, fmt.Errorf("fly: create volume in %q: %w", app, err)
		}
		return v, lerr
	}
	return Volume{}, fmt.Errorf("fly: create volume in %q: %w", app, err)
}

// findVolume returns the gateway's volume, ErrNotFound if there is none. Of several with
// its name it keeps the one attached to a machine, else the oldest, and deletes the other
// unattached ones: only a repeated create makes them.
func (d *Driver) findVolume(ctx context.Context, gatewayID, app string) (Volume, error) {
	vols, err := d.volumes(ctx, app)
	if err != nil {
		return Volume{}, err
	}
	if len(vols) == 0 {
		return Volume{}, fmt.Errorf("fly: volume %q in %q: %w", volumeName, app, ErrNotFound)
	}
	slices.SortFunc(vols, func(a, b fly.Volume) int {
		if a.IsAttached() != b.IsAttached() {
			if a.IsAttached() {
				return -1
			}
			return 1
		}
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	for _, extra := range vols[1:] {
		if extra.IsAttached() {
			continue
		}
		if err := d.deleteVolume(ctx, app, extra.ID); err != nil {
			return Volume{}, err
		}
		d.log.LogAttrs(ctx, slog.LevelWarn, "fly: deleted duplicate volume",
			slog.String("gateway", gatewayID), slog.String("volume", extra.ID))
	}
	return volumeOf(vols[0])
}

// volumes lists the app's live volumes named volumeName.
func (d *Driver) volumes(ctx context.Context, app string) ([]fly.Volume, error) {
	var all []fly.Volume
	err := d.call(ctx, callOpts{}, func(ctx context.Context) (err error) {
		all, err = d.client.GetVolumes(ctx, app)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("fly: list volumes of %q: %w", app, err)
	}
	return slices.DeleteFunc(all, func(v fly.Volume) bool { return v.Name != volumeName }), nil
}

func (d *Driver) deleteVolume(ctx context.Context, app, id string) error {
	err := d.call(ctx, callOpts{}, func(ctx context.Context) error {
		_, err := d.client.DeleteVolume(ctx, app, id)
		return err
	})
	if err != nil && statusOf(err) != http.StatusNotFound {
		return fmt.Errorf("fly: delete volume %s of %q: %w", id, app, err)
	}
	return nil
}

// volumeOf converts an API volume, refusing an unencrypted one: it is not one this driver
// made, and a gateway's data is kept encrypted at rest.
func volumeOf(v fly.Volume) (Volume, error) {
	if !v.Encrypted {
		return Volume{}, fmt.Errorf("fly: volume %s is not encrypted: delete it or move it aside", v.ID)
	}
	return Volume{ID: v.ID, Name: v.Name, Region: v.Region, SizeGB: v.SizeGb, Encrypted: v.Encrypted}, nil
}
