package deploy

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/moltgate/moltgate/audit"
	"github.com/moltgate/moltgate/keystore"
	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/provisioner"
	"github.com/moltgate/moltgate/provisioner/local"
	"github.com/moltgate/moltgate/proxy"
	"github.com/moltgate/moltgate/proxy/admin"
	"github.com/moltgate/moltgate/proxy/authn"
	"github.com/moltgate/moltgate/proxy/browser"
	"github.com/moltgate/moltgate/proxy/wsrelay"
	"github.com/moltgate/moltgate/registry"
	"github.com/moltgate/moltgate/store"
)

// metric is one metric family a moltgate package registers.
type metric struct {
	labels    map[string]bool
	histogram bool // its _bucket, _sum and _count series exist
}

// recorder is a prometheus.Registerer that notes every collector registered with it, by its
// descriptions: unlike a Gather, it sees a labelled family that has no series yet.
type recorder struct {
	reg     *prometheus.Registry // still refuses duplicates and inconsistent descriptions
	metrics map[string]metric
}

var (
	descName   = regexp.MustCompile(`^Desc\{fqName: "([^"]+)"`)
	descLabels = regexp.MustCompile(`variableLabels: \{([^}]*)\}\}$`)
)

func (r *recorder) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return err
	}
	_, isHist := c.(*prometheus.HistogramVec)
	if h, ok := c.(prometheus.Histogram); ok {
		isHist = isHistogram(h)
	}
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		s := d.String()
		name, labels := descName.FindStringSubmatch(s), descLabels.FindStringSubmatch(s)
		if name == nil || labels == nil {
			return fmt.Errorf("recorder: cannot read %s", s)
		}
		m := metric{labels: map[string]bool{}, histogram: isHist}
		for l := range strings.SplitSeq(labels[1], ",") {
			if l != "" {
				m.labels[l] = true
			}
		}
		r.metrics[name[1]] = m
	}
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *recorder) Unregister(c prometheus.Collector) bool { return r.reg.Unregister(c) }

// isHistogram tells a histogram from a summary, which share the Go interface.
func isHistogram(h prometheus.Histogram) bool {
	ch := make(chan prometheus.Metric, 1)
	h.Collect(ch)
	var m dto.Metric
	return (<-ch).Write(&m) == nil && m.Histogram != nil
}

// registeredMetrics is every metric family moltgate's packages register, found by building
// each of them with a recorder, as serve does: never a list kept by hand.
var registeredMetrics = sync.OnceValues(func() (map[string]metric, error) {
	dir, err := os.MkdirTemp("", "moltgate-deploy-metrics-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ctx, logger := context.Background(), slog.New(slog.DiscardHandler)
	rec := &recorder{reg: prometheus.NewRegistry(), metrics: map[string]metric{}}

	kv, err := store.OpenBolt(filepath.Join(dir, "moltgate.db"))
	if err != nil {
		return nil, err
	}
	defer kv.Close()
	if err := rec.Register(kv.Collector()); err != nil {
		return nil, err
	}
	engine, err := policies.New(ctx, policies.Config{}, logger, rec)
	if err != nil {
		return nil, err
	}
	spool, err := audit.OpenFile(audit.FileConfig{Dir: filepath.Join(dir, "spool"), Metrics: rec}, logger)
	if err != nil {
		return nil, err
	}
	defer spool.Close()
	if _, err := audit.OpenArchive(audit.ArchiveConfig{Dir: filepath.Join(dir, "archive"), Metrics: rec}, logger); err != nil {
		return nil, err
	}
	ring, err := keystore.NewKeyring(1, make([]byte, 32))
	if err != nil {
		return nil, err
	}
	ks := keystore.New(ring)
	gateways, err := registry.New(ctx, kv, ks, engine, nil)
	if err != nil {
		return nil, err
	}
	if _, err := proxy.New(proxy.Config{}, proxy.Deps{Gateways: gateways, Policy: engine, Audit: spool,
		Logger: logger, Metrics: rec}); err != nil {
		return nil, err
	}
	if _, err := wsrelay.New(wsrelay.Config{}, wsrelay.Deps{Gateways: gateways, Policy: engine, Audit: spool,
		Logger: logger, Metrics: rec}); err != nil {
		return nil, err
	}
	if _, err := browser.New(browser.Config{}, kv, nil, logger, rec); err != nil {
		return nil, err
	}
	if _, err := authn.NewClerk(authn.ClerkConfig{SecretKey: "sk_test_deploy", Issuer: "https://clerk.example.test",
		AuthorizedParties: []string{"https://dashboard.example.test"}}, logger, rec); err != nil {
		return nil, err
	}
	driver, err := local.New(local.Config{OpenClaw: "openclaw", Dir: filepath.Join(dir, "gateways")}, logger)
	if err != nil {
		return nil, err
	}
	if _, err := provisioner.New(provisioner.Config{Drivers: map[string]provisioner.Driver{"local": driver}},
		provisioner.Deps{KV: kv, Sealer: ks, Registry: gateways, Audit: spool, Logger: logger, Metrics: rec}); err != nil {
		return nil, err
	}
	if _, err := admin.New(admin.Config{}, admin.Deps{Registry: gateways, Policy: engine, Audit: spool,
		Logger: logger, Metrics: rec}); err != nil {
		return nil, err
	}
	return rec.metrics, nil
})
