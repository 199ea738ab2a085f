package fly

import (
	"context"
	"errors"
	"fmt"

	"github.com/moltgate/moltgate/provisioner"
)

// Upgrade rolls the gateway's machine to image, pinned by digest, keeping the secrets
// version it runs with, and waits until it is started with every check passing: the
// provisioner's Upgrader, for single and fleet upgrades. It returns the image the machine
// ran before, also when it fails (empty when there was no machine), so that the caller can
// roll back to it with another Upgrade. A machine that did not become healthy is
// provisioner.ErrUnhealthy (and ErrMachineFailed); an unpinned image is refused before any
// call.
func (d *Driver) Upgrade(ctx context.Context, gatewayID, image string) (previous string, err error) {
	up, err := d.UpgradeMachine(ctx, gatewayID, MachineSpec{Image: image})
	if errors.Is(err, ErrMachineFailed) {
		err = fmt.Errorf("%w: %w", provisioner.ErrUnhealthy, err)
	}
	return up.PreviousImage, err
}

var _ provisioner.Upgrader = (*Driver)(nil)
