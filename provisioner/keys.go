package provisioner

import "strings"

// KeysFingerprint names the tenant's active provider keys in one string (provider, key id
// and the keystore's fingerprint of each, never a secret). A step that delivers the keys
// (app secrets, a process environment) records it with SetOutput, and its Check compares
// it with the current one: a key added, activated, re-activated or revoked then makes the
// step run again, and the keystore's subscription (WakeTenant) makes that happen at once.
func (r *Run) KeysFingerprint() (string, error) {
	keys, err := r.ActiveKeys()
	if err != nil {
		return "", err
	}
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k.Provider+":"+k.ID+":"+k.Fingerprint)
	}
	return strings.Join(parts, ","), nil
}
