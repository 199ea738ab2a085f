package provisioner

import "errors"

// SetCrash makes p's passes call fn at each point ("ensure fake.vm: acted"); an error from
// fn ends the pass there as if the process had died: nothing more is written and the lease
// is not released.
func SetCrash(p *Provisioner, fn func(point string) error) { p.crash = fn }

// IsCrash reports whether err is a pass ended by SetCrash's hook.
func IsCrash(err error) bool {
	var c crashError
	return errors.As(err, &c)
}
