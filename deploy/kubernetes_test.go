package deploy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// kube is the Kubernetes manifests of deploy/kubernetes, each decoded strictly into its API type.
type kube struct {
	deployment appsv1.Deployment
	service    corev1.Service
	pdb        policyv1.PodDisruptionBudget
	configMap  corev1.ConfigMap
	network    networkingv1.NetworkPolicy
}

// decodeStrict decodes YAML data into obj as the Kubernetes API server decodes a manifest:
// a field unknown to obj's type, a field whose case differs, or a duplicate is an error.
func decodeStrict(data []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	return errors.Join(append(strict, err)...)
}

// decodeManifest decodes the one object in path into obj as the API server does, strictly: a
// field unknown to the type, a field whose case differs, or a duplicate field is an error, as
// is another apiVersion or kind than want.
func decodeManifest(path, apiVersion, kind string, obj any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := decodeStrict(data, obj); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	var tm metav1.TypeMeta
	_ = yaml.Unmarshal(data, &tm)
	if tm.APIVersion != apiVersion || tm.Kind != kind {
		return fmt.Errorf("%s: %s %s, want %s %s", path, tm.APIVersion, tm.Kind, apiVersion, kind)
	}
	return nil
}

func readKube(t *testing.T) kube {
	t.Helper()
	var k kube
	for _, m := range []struct {
		file, apiVersion, kind string
		obj                    any
	}{
		{"deployment.yaml", "apps/v1", "Deployment", &k.deployment},
		{"service.yaml", "v1", "Service", &k.service},
		{"pdb.yaml", "policy/v1", "PodDisruptionBudget", &k.pdb},
		{"configmap.yaml", "v1", "ConfigMap", &k.configMap},
		{"networkpolicy.yaml", "networking.k8s.io/v1", "NetworkPolicy", &k.network},
	} {
		if err := decodeManifest("kubernetes/"+m.file, m.apiVersion, m.kind, m.obj); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

func (k kube) deepCopy() kube {
	return kube{*k.deployment.DeepCopy(), *k.service.DeepCopy(), *k.pdb.DeepCopy(), *k.configMap.DeepCopy(), *k.network.DeepCopy()}
}

// moltgateConfig is the part of a moltgate configuration the deployment files must agree with.
type moltgateConfig struct {
	Listen          string `json:"listen"`
	AdminListen     string `json:"admin_listen"`
	DataDir         string `json:"data_dir"`
	GatewayDomain   string `json:"gateway_domain"`
	ShutdownTimeout string `json:"shutdown_timeout"`
	Store           struct {
		Backend string `json:"backend"`
	} `json:"store"`
}

// parseConfig reads text as a moltgate configuration, and the names of the environment
// variables its secret references name ({env: NAME}, keystore.env); file references are
// returned apart.
func parseConfig(text string) (cfg moltgateConfig, envRefs, fileRefs []string, err error) {
	if err := yaml.Unmarshal([]byte(text), &cfg); err != nil {
		return cfg, nil, nil, err
	}
	var tree any
	if err := yaml.Unmarshal([]byte(text), &tree); err != nil {
		return cfg, nil, nil, err
	}
	var walk func(key string, v any)
	walk = func(key string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				walk(k, c)
			}
		case []any:
			for _, c := range v {
				walk(key, c)
			}
		case string:
			switch key {
			case "env":
				envRefs = append(envRefs, v)
			case "file":
				fileRefs = append(fileRefs, v)
			}
		}
	}
	walk("", tree)
	return cfg, envRefs, fileRefs, nil
}

// port is the port of an IP:port listen address, or 0.
func port(addr string) int32 {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return 0
	}
	return int32(ap.Port())
}

// containerPort resolves p (a number or a port name) among c's ports; 0 if it is not one.
func containerPort(c corev1.Container, p intstr.IntOrString) int32 {
	for _, cp := range c.Ports {
		if p.Type == intstr.String && cp.Name == p.StrVal || p.Type == intstr.Int && cp.ContainerPort == p.IntVal {
			return cp.ContainerPort
		}
	}
	return 0
}

// selects tells whether sel matches the pods of the Deployment.
func selects(sel *metav1.LabelSelector, d appsv1.Deployment) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && sel != nil && !s.Empty() && s.Matches(labels.Set(d.Spec.Template.Labels))
}

var secretName = regexp.MustCompile(`(?i)token|password|secret|key|credential`)

// kubeProblems returns every way the manifests fall short of running N moltgate replicas safely.
func kubeProblems(k kube) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	d := k.deployment
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		return []error{fmt.Errorf("deployment: %d containers, want moltgate alone", len(pod.Containers))}
	}
	c := pod.Containers[0]

	// The configuration: from the ConfigMap, mounted where --config reads it.
	i := slices.Index(c.Args, "--config")
	if i < 0 || i+1 >= len(c.Args) {
		return append(errs, fmt.Errorf("deployment: args %v: want serve --config FILE", c.Args))
	}
	cfgPath := c.Args[i+1]
	text, ok := k.configMap.Data[path.Base(cfgPath)]
	if !ok {
		bad("configmap %s: no key %s, which --config %s reads", k.configMap.Name, path.Base(cfgPath), cfgPath)
	}
	mounted := false
	for _, v := range pod.Volumes {
		if v.ConfigMap == nil || v.ConfigMap.Name != k.configMap.Name {
			continue
		}
		for _, m := range c.VolumeMounts {
			mounted = mounted || m.Name == v.Name && m.MountPath == path.Dir(cfgPath) && m.SubPath == ""
		}
	}
	if !mounted {
		bad("deployment: ConfigMap %s is not mounted at %s", k.configMap.Name, path.Dir(cfgPath))
	}
	cfg, envRefs, fileRefs, err := parseConfig(text)
	if err != nil {
		return append(errs, fmt.Errorf("configmap: %w", err))
	}
	if cfg.Store.Backend != "redis" {
		bad("configmap: store.backend %q: N replicas share state only with redis", cfg.Store.Backend)
	}

	// Replicas, spread, disruption budget.
	replicas := int32(1)
	if d.Spec.Replicas != nil {
		replicas = *d.Spec.Replicas
	}
	if replicas < 3 {
		bad("deployment: %d replicas, want at least 3", replicas)
	}
	if !selects(d.Spec.Selector, d) {
		bad("deployment: selector %v does not select its own pods %v", d.Spec.Selector, d.Spec.Template.Labels)
	}
	spread := false
	for _, tsc := range pod.TopologySpreadConstraints {
		spread = spread || selects(tsc.LabelSelector, d) && tsc.MaxSkew == 1 &&
			(tsc.TopologyKey == "kubernetes.io/hostname" || tsc.TopologyKey == "topology.kubernetes.io/zone")
	}
	if !spread {
		bad("deployment: no topology spread of its pods over nodes or zones")
	}
	if !selects(k.pdb.Spec.Selector, d) {
		bad("pdb: selector %v does not select the deployment's pods %v", k.pdb.Spec.Selector, d.Spec.Template.Labels)
	}
	if m := k.pdb.Spec.MinAvailable; m == nil || m.Type != intstr.Int || m.IntVal < 1 || m.IntVal >= replicas {
		bad("pdb: minAvailable %v: want a number from 1 to replicas-1 (%d), or no drain could ever proceed", m, replicas-1)
	}

	// Service: the proxy listener of the pods.
	if !selects(&metav1.LabelSelector{MatchLabels: k.service.Spec.Selector}, d) {
		bad("service: selector %v does not select the deployment's pods %v", k.service.Spec.Selector, d.Spec.Template.Labels)
	}
	for _, p := range k.service.Spec.Ports {
		if containerPort(c, p.TargetPort) != port(cfg.Listen) {
			bad("service: port %d targets %s, want the proxy's listen port %d", p.Port, p.TargetPort.String(), port(cfg.Listen))
		}
	}
	if len(k.service.Spec.Ports) == 0 {
		bad("service: no port")
	}

	// NetworkPolicy: the pods take connections only from the peers it names, the proxy's
	// among them; nobody at large reaches the admin port.
	np := k.network.Spec
	if !selects(&np.PodSelector, d) || !slices.Contains(np.PolicyTypes, networkingv1.PolicyTypeIngress) {
		bad("networkpolicy: does not isolate the deployment's pods for ingress")
	}
	reached := map[int32]bool{}
	for i, rule := range np.Ingress {
		if len(rule.From) == 0 || len(rule.Ports) == 0 {
			bad("networkpolicy: ingress[%d] lets anyone in, or to any port: name the peers and the ports", i)
		}
		for _, p := range rule.Ports {
			if p.Port == nil || containerPort(c, *p.Port) == 0 {
				bad("networkpolicy: ingress[%d]: port %v is none of the container's", i, p.Port)
				continue
			}
			reached[containerPort(c, *p.Port)] = true
		}
	}
	if !reached[port(cfg.Listen)] {
		bad("networkpolicy: no peer may reach the proxy port %d", port(cfg.Listen))
	}

	// Probes: on the admin listener, which must take connections from the kubelet.
	if ap, err := netip.ParseAddrPort(cfg.AdminListen); err != nil || !ap.Addr().IsUnspecified() {
		bad("configmap: admin_listen %q: the kubelet probes the pod IP: want 0.0.0.0 or [::]", cfg.AdminListen)
	}
	for _, p := range []struct {
		name, path string
		probe      *corev1.Probe
	}{{"liveness", "/healthz", c.LivenessProbe}, {"readiness", "/readyz", c.ReadinessProbe}, {"startup", "/healthz", c.StartupProbe}} {
		if p.probe == nil {
			if p.name != "startup" {
				bad("deployment: no %s probe", p.name)
			}
			continue
		}
		g := p.probe.HTTPGet
		if g == nil || g.Path != p.path || containerPort(c, g.Port) != port(cfg.AdminListen) {
			bad("deployment: %s probe %+v: want GET %s on the admin port %d", p.name, p.probe.ProbeHandler, p.path, port(cfg.AdminListen))
		}
	}

	// Non-root, read-only, no privilege; the data dir a writable volume.
	nonRoot := func(sc *corev1.PodSecurityContext, csc *corev1.SecurityContext) bool {
		if csc != nil && csc.RunAsNonRoot != nil {
			return *csc.RunAsNonRoot && (csc.RunAsUser == nil || *csc.RunAsUser != 0)
		}
		return sc != nil && sc.RunAsNonRoot != nil && *sc.RunAsNonRoot && (sc.RunAsUser == nil || *sc.RunAsUser != 0)
	}
	if !nonRoot(pod.SecurityContext, c.SecurityContext) {
		bad("deployment: runAsNonRoot is not true (or runAsUser is 0)")
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		bad("deployment: readOnlyRootFilesystem is not true")
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		bad("deployment: want allowPrivilegeEscalation false and every capability dropped")
	}
	if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == cfg.DataDir && !m.ReadOnly }) {
		bad("deployment: data_dir %s is not a writable volume (the root filesystem is read-only)", cfg.DataDir)
	}

	// Resources: requests to schedule by, a memory limit to be evicted at rather than the node.
	r := c.Resources
	if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
		bad("deployment: resources %v: want cpu and memory requests and a memory limit", r)
	}

	// Secrets: by reference from a Secret, never a value in a manifest.
	secretEnv := map[string]bool{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name != "":
			secretEnv[e.Name] = true
		case secretName.MatchString(e.Name):
			bad("deployment: env %s: a secret's variable must come from a secretKeyRef", e.Name)
		}
	}
	for _, name := range envRefs {
		if !secretEnv[name] {
			bad("configmap: secret reference {env: %s}: the deployment sets no such variable from a Secret", name)
		}
	}
	for _, f := range fileRefs {
		bad("configmap: secret reference {file: %s}: a Secret volume's files are root-owned or group-readable, which moltgate refuses: use {env: …} from a secretKeyRef", f)
	}
	if len(c.EnvFrom) > 0 {
		bad("deployment: envFrom puts every key of a source in the environment: name each secret instead")
	}

	// Shutdown: the grace period covers the preStop pause and moltgate's own drain.
	shutdown, err := time.ParseDuration(orDefault(cfg.ShutdownTimeout, "15s"))
	if err != nil {
		bad("configmap: shutdown_timeout %q: %v", cfg.ShutdownTimeout, err)
	}
	var preStop time.Duration
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	grace := 30 * time.Second
	if pod.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	}
	if grace <= preStop+shutdown {
		bad("deployment: terminationGracePeriodSeconds %v is not above preStop %v + shutdown_timeout %v: SIGKILL would cut the drain", grace, preStop, shutdown)
	}
	return errs
}

// orDefault is s, or def when s is empty.
func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// The Kubernetes manifests decode strictly into the API types and run N replicas safely.
func TestKubernetesManifests(t *testing.T) {
	t.Parallel()
	for _, err := range kubeProblems(readKube(t)) {
		t.Error(err)
	}
}

// The ConfigMap's moltgate configuration passes moltgate's own `config check`, with the
// secrets the Deployment gives it from the Secret (dummy values here).
func TestKubernetesConfigPassesConfigCheck(t *testing.T) {
	t.Parallel()
	k := readKube(t)
	env := map[string]string{}
	for _, e := range k.deployment.Spec.Template.Spec.Containers[0].Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			env[e.Name] = strings.Repeat("s", 40)
		}
	}
	if err := configCheck(t, k.configMap.Data["moltgate.yaml"], env); err != nil {
		t.Error(err)
	}
}

// Each property kubeProblems checks is refused when a manifest breaks it.
func TestKubernetesManifestsRefused(t *testing.T) {
	t.Parallel()
	good := readKube(t)
	if errs := kubeProblems(good); len(errs) > 0 {
		t.Fatalf("the manifests themselves: %v", errors.Join(errs...))
	}
	ctr := func(k *kube) *corev1.Container { return &k.deployment.Spec.Template.Spec.Containers[0] }
	cfg := func(k *kube, old, new string) {
		k.configMap.Data["moltgate.yaml"] = strings.Replace(k.configMap.Data["moltgate.yaml"], old, new, 1)
	}
	f, tr := false, true
	for name, mutate := range map[string]func(k *kube){
		"one replica":                func(k *kube) { one := int32(1); k.deployment.Spec.Replicas = &one },
		"liveness on /readyz":        func(k *kube) { ctr(k).LivenessProbe.HTTPGet.Path = "/readyz" },
		"readiness on the proxy":     func(k *kube) { ctr(k).ReadinessProbe.HTTPGet.Port = intstr.FromString("proxy") },
		"readiness by number, wrong": func(k *kube) { ctr(k).ReadinessProbe.HTTPGet.Port = intstr.FromInt32(8080) },
		"no readiness probe":         func(k *kube) { ctr(k).ReadinessProbe = nil },
		"startup probe elsewhere":    func(k *kube) { ctr(k).StartupProbe.HTTPGet.Path = "/metrics" },
		"admin on loopback":          func(k *kube) { cfg(k, "admin_listen: 0.0.0.0:9090", "admin_listen: 127.0.0.1:9090") },
		"root allowed": func(k *kube) {
			k.deployment.Spec.Template.Spec.SecurityContext.RunAsNonRoot = &f
		},
		"root user": func(k *kube) {
			zero := int64(0)
			ctr(k).SecurityContext.RunAsNonRoot, ctr(k).SecurityContext.RunAsUser = &tr, &zero
		},
		"writable root":           func(k *kube) { ctr(k).SecurityContext.ReadOnlyRootFilesystem = &f },
		"privilege escalation":    func(k *kube) { ctr(k).SecurityContext.AllowPrivilegeEscalation = &tr },
		"data dir not a volume":   func(k *kube) { cfg(k, "data_dir: /var/lib/moltgate", "data_dir: /srv/moltgate") },
		"no resources":            func(k *kube) { ctr(k).Resources = corev1.ResourceRequirements{} },
		"inline secret":           func(k *kube) { ctr(k).Env[0].ValueFrom, ctr(k).Env[0].Value = nil, strings.Repeat("x", 40) },
		"secret not from Secret":  func(k *kube) { ctr(k).Env = ctr(k).Env[1:] },
		"secret file reference":   func(k *kube) { cfg(k, "{env: MOLTGATE_ADMIN_TOKEN}", "{file: /etc/moltgate/admin-token}") },
		"envFrom a Secret":        func(k *kube) { ctr(k).EnvFrom = []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{}}} },
		"config from another map": func(k *kube) { k.deployment.Spec.Template.Spec.Volumes[0].ConfigMap.Name = "other" },
		"config elsewhere":        func(k *kube) { ctr(k).Args = []string{"serve", "--config", "/etc/other/moltgate.yaml"} },
		"bolt store":              func(k *kube) { cfg(k, "backend: redis", "backend: bolt") },
		"no topology spread":      func(k *kube) { k.deployment.Spec.Template.Spec.TopologySpreadConstraints = nil },
		"spread over other pods": func(k *kube) {
			for i := range k.deployment.Spec.Template.Spec.TopologySpreadConstraints {
				k.deployment.Spec.Template.Spec.TopologySpreadConstraints[i].LabelSelector.MatchLabels = map[string]string{"app": "other"}
			}
		},
		"pdb selects nothing":     func(k *kube) { k.pdb.Spec.Selector.MatchLabels = map[string]string{"app.kubernetes.io/name": "other"} },
		"pdb blocks every drain":  func(k *kube) { three := intstr.FromInt32(3); k.pdb.Spec.MinAvailable = &three },
		"service selects nothing": func(k *kube) { k.service.Spec.Selector = map[string]string{"app": "other"} },
		"service on admin":        func(k *kube) { k.service.Spec.Ports[0].TargetPort = intstr.FromString("admin") },
		"short grace period":      func(k *kube) { ten := int64(10); k.deployment.Spec.Template.Spec.TerminationGracePeriodSeconds = &ten },
		"policy selects nothing": func(k *kube) {
			k.network.Spec.PodSelector.MatchLabels = map[string]string{"app.kubernetes.io/name": "other"}
		},
		"admin open to all": func(k *kube) { k.network.Spec.Ingress[1].From = nil },
		"every port open":   func(k *kube) { k.network.Spec.Ingress[0].Ports = nil },
		"proxy unreachable": func(k *kube) { k.network.Spec.Ingress = k.network.Spec.Ingress[1:] },
		"policy on a port that is not": func(k *kube) {
			p := intstr.FromString("metrics")
			k.network.Spec.Ingress[1].Ports[0].Port = &p
		},
		"selector misses pods": func(k *kube) {
			k.deployment.Spec.Selector.MatchLabels = map[string]string{"app.kubernetes.io/name": "other"}
		},
	} {
		t.Run(name, func(t *testing.T) {
			k := good.deepCopy()
			mutate(&k)
			if len(kubeProblems(k)) == 0 {
				t.Error("not refused")
			}
		})
	}

	// Strict decoding: a misspelt field is an error, not a default.
	for _, c := range []struct{ from, to string }{
		{"readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true"},
		{"runAsNonRoot: true", "runAsNonroot: true"},
		{"apiVersion: apps/v1", "apiVersion: apps/v1beta2"},
	} {
		data, _ := os.ReadFile("kubernetes/deployment.yaml")
		path := t.TempDir() + "/deployment.yaml"
		os.WriteFile(path, []byte(strings.Replace(string(data), c.from, c.to, 1)), 0o600)
		var d appsv1.Deployment
		if err := decodeManifest(path, "apps/v1", "Deployment", &d); err == nil {
			t.Errorf("%s: decoded", c.to)
		}
	}
}
