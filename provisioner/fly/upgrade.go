package fly

import "context"

// Upgrade rolls the gateway's machine to image, pinned by digest, keeping the secrets
// version it runs with, and waits until it is started with every check passing: the
// provisioner's Upgrader, for single and fleet upgrades. It returns the image the machine
// ran before, also when it fails (empty when there was no machine), so that the caller can
// roll back to it with another Upgrade. An unpinned image is refused before any call.
func (d *Driver) Upgrade(ctx context.Context, gatewayID, image string) (previous string, err error) {
	up, err := d.UpgradeMachine(ctx, gatewayID, MachineSpec{Image: image})
	return up.PreviousImage, err
}
