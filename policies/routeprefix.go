package policies

import (
	"errors"
	"fmt"
	"strings"
)

// ErrRoutePrefix is returned by New and Reload for a policy set whose route prefixes
// (data.http.admin_prefixes, data.http.owner_prefixes) are not all lower-case strings.
var ErrRoutePrefix = errors.New("route prefixes must be lower-case strings")

// routePrefixLists are the lists under data.http that the default rules (route,
// proxy.rego) match the lower-cased route against.
var routePrefixLists = []string{"admin_prefixes", "owner_prefixes"}

// checkRoutePrefixes refuses route prefixes that are not lower-case strings. The rules lower
// the route only, so a prefix typed "/V1/Responses" would match no request, and the route
// it was meant to reserve would be open to every member: refusing the set stops that.
func checkRoutePrefixes(docs map[string]any) error {
	http, _ := docs["http"].(map[string]any)
	var errs []error
	for _, name := range routePrefixLists {
		v, ok := http[name]
		if !ok {
			continue // checkDataRefs names a list the rules read and no file defines
		}
		list, ok := v.([]any)
		if !ok {
			errs = append(errs, fmt.Errorf("data.http.%s: %T, want a list of strings", name, v))
			continue
		}
		for i, p := range list {
			switch s, ok := p.(string); {
			case !ok:
				errs = append(errs, fmt.Errorf("data.http.%s[%d]: %v, want a lower-case string", name, i, p))
			case s != strings.ToLower(s):
				errs = append(errs, fmt.Errorf("data.http.%s[%d]: %q, want a lower-case string", name, i, s))
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return errors.Join(append([]error{ErrRoutePrefix}, errs...)...)
}
