package authn

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the verifier. Labels are bounded: result is "ok" or "error".
type metrics struct {
	refreshOK    prometheus.Counter
	refreshError prometheus.Counter
	cacheHits    prometheus.Counter
	cacheMisses  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	refreshes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "moltgate_authn_jwks_refreshes_total",
		Help: "JWKS fetches from the Clerk Backend API, by result (ok, error).",
	}, []string{"result"})
	hits := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "moltgate_authn_cache_hits_total",
		Help: "Session tokens accepted from the verified-token cache without an RSA verification.",
	})
	misses := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "moltgate_authn_cache_misses_total",
		Help: "Session tokens not found in the verified-token cache.",
	})
	if reg != nil {
		for _, c := range []prometheus.Collector{refreshes, hits, misses} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("authn: register metrics: %w", err)
			}
		}
	}
	return &metrics{
		refreshOK:    refreshes.WithLabelValues("ok"),
		refreshError: refreshes.WithLabelValues("error"),
		cacheHits:    hits,
		cacheMisses:  misses,
	}, nil
}
