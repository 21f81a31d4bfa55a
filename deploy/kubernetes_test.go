package deploy_test

import (
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// workerVariables are the environment variables the worker reads
// (design.md and cmd/worker); configuration naming anything else is a typo
// the worker would silently ignore.
var workerVariables = []string{
	"REDIS_URL", "VERSORI_BASE_URL", "VERSORI_API_KEY", "VERSORI_API_KEY_FILE", "VERSORI_AUTH_SCHEME",
	"VERSORI_TIMEOUT", "IMPORT_RATE_LIMIT", "IMPORT_RATE_BURST", "IMPORT_RATE_MAX_WAIT", "WORKER_CONCURRENCY",
	"WORKER_QUEUE", "WORKER_SHUTDOWN_TIMEOUT", "RETRY_BACKOFF_BASE", "RETRY_BACKOFF_CAP", "METRICS_ADDR",
	"LOG_LEVEL", "ENABLE_PPROF", "CALLBACK_SECRET", "CALLBACK_SECRET_FILE", "CALLBACK_ALLOWED_HOSTS",
}

// The subset of Kubernetes objects the checks read. Own types rather than
// k8s.io/api keep the module graph small.
type (
	object struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name   string            `json:"name"`
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	selectorSpec struct {
		MatchLabels map[string]string `json:"matchLabels"`
	}
	probe struct {
		HTTPGet *struct {
			Path string `json:"path"`
			Port any    `json:"port"`
		} `json:"httpGet"`
	}
	envVar struct {
		Name      string `json:"name"`
		Value     string `json:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `json:"name"`
				Key  string `json:"key"`
			} `json:"secretKeyRef"`
		} `json:"valueFrom"`
	}
	container struct {
		Name  string `json:"name"`
		Image string `json:"image"`
		Ports []struct {
			Name          string `json:"name"`
			ContainerPort int    `json:"containerPort"`
		} `json:"ports"`
		Env     []envVar `json:"env"`
		EnvFrom []struct {
			ConfigMapRef *struct {
				Name string `json:"name"`
			} `json:"configMapRef"`
		} `json:"envFrom"`
		VolumeMounts []struct {
			Name      string `json:"name"`
			MountPath string `json:"mountPath"`
			ReadOnly  bool   `json:"readOnly"`
		} `json:"volumeMounts"`
		LivenessProbe  *probe `json:"livenessProbe"`
		ReadinessProbe *probe `json:"readinessProbe"`
		Resources      struct {
			Requests map[string]string `json:"requests"`
			Limits   map[string]string `json:"limits"`
		} `json:"resources"`
		SecurityContext *struct {
			RunAsNonRoot             *bool `json:"runAsNonRoot"`
			ReadOnlyRootFilesystem   *bool `json:"readOnlyRootFilesystem"`
			AllowPrivilegeEscalation *bool `json:"allowPrivilegeEscalation"`
		} `json:"securityContext"`
	}
	deployment struct {
		object
		Spec struct {
			Replicas *int         `json:"replicas"`
			Selector selectorSpec `json:"selector"`
			Template struct {
				Metadata struct {
					Labels map[string]string `json:"labels"`
				} `json:"metadata"`
				Spec struct {
					TerminationGracePeriodSeconds *int `json:"terminationGracePeriodSeconds"`
					SecurityContext               *struct {
						RunAsNonRoot *bool `json:"runAsNonRoot"`
						RunAsUser    *int  `json:"runAsUser"`
					} `json:"securityContext"`
					Containers []container `json:"containers"`
					Volumes    []struct {
						Name   string `json:"name"`
						Secret *struct {
							SecretName string `json:"secretName"`
							Items      []struct {
								Key  string `json:"key"`
								Path string `json:"path"`
							} `json:"items"`
						} `json:"secret"`
					} `json:"volumes"`
				} `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	configMap struct {
		object
		Data map[string]string `json:"data"`
	}
	service struct {
		object
		Spec struct {
			Selector map[string]string `json:"selector"`
			Ports    []struct {
				Name       string `json:"name"`
				Port       int    `json:"port"`
				TargetPort any    `json:"targetPort"`
			} `json:"ports"`
		} `json:"spec"`
	}
	pdb struct {
		object
		Spec struct {
			MinAvailable   any          `json:"minAvailable"`
			MaxUnavailable any          `json:"maxUnavailable"`
			Selector       selectorSpec `json:"selector"`
		} `json:"spec"`
	}
	serviceMonitor struct {
		object
		Spec struct {
			Selector  selectorSpec `json:"selector"`
			Endpoints []struct {
				Port string `json:"port"`
				Path string `json:"path"`
			} `json:"endpoints"`
		} `json:"spec"`
	}
	scaledObject struct {
		object
		Spec struct {
			ScaleTargetRef struct {
				Name string `json:"name"`
			} `json:"scaleTargetRef"`
			MinReplicaCount *int `json:"minReplicaCount"`
			MaxReplicaCount *int `json:"maxReplicaCount"`
			Triggers        []struct {
				Type     string            `json:"type"`
				Metadata map[string]string `json:"metadata"`
			} `json:"triggers"`
		} `json:"spec"`
	}
)

// rendered is the kustomize output, one YAML document per resource, by kind.
type rendered map[string][][]byte

// kustomize renders dir as `kubectl kustomize` would, in process.
func kustomize(dir string) (rendered, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, err
	}
	out := rendered{}
	for _, r := range m.Resources() {
		b, err := r.AsYAML()
		if err != nil {
			return nil, err
		}
		out[r.GetKind()] = append(out[r.GetKind()], b)
	}
	return out, nil
}

// one decodes the single resource of a kind into v.
func (r rendered) one(kind string, v any) error {
	docs := r[kind]
	if len(docs) != 1 {
		return fmt.Errorf("%d %s resources, want 1", len(docs), kind)
	}
	return yaml.Unmarshal(docs[0], v)
}

// checkManifests returns every way the rendered base falls short of what the
// worker and the cluster need.
func checkManifests(r rendered) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	var d deployment
	var cm configMap
	var svc service
	var budget pdb
	var sm serviceMonitor
	var so scaledObject
	for kind, v := range map[string]any{
		"Deployment": &d, "ConfigMap": &cm, "Service": &svc, "PodDisruptionBudget": &budget,
		"ServiceMonitor": &sm, "ScaledObject": &so,
	} {
		if err := r.one(kind, v); err != nil {
			bad("%s: %v", kind, err)
		}
	}
	if len(r["PrometheusRule"]) != 1 {
		bad("want one PrometheusRule, got %d", len(r["PrometheusRule"]))
	}
	if len(errs) > 0 {
		return errs
	}

	pod := d.Spec.Template.Spec
	podLabels := d.Spec.Template.Metadata.Labels
	if !subset(d.Spec.Selector.MatchLabels, podLabels) || len(d.Spec.Selector.MatchLabels) == 0 {
		bad("Deployment selector %v does not select its pods %v", d.Spec.Selector.MatchLabels, podLabels)
	}
	if len(pod.Containers) != 1 {
		return append(errs, fmt.Errorf("Deployment has %d containers, want 1", len(pod.Containers)))
	}
	c := pod.Containers[0]

	// Configuration: every variable is the worker's, the ConfigMap is the
	// generated one, and the shutdown timeout fits the grace period.
	env := map[string]string{}
	for k, v := range cm.Data {
		env[k] = v
	}
	if len(c.EnvFrom) != 1 || c.EnvFrom[0].ConfigMapRef == nil || c.EnvFrom[0].ConfigMapRef.Name != cm.Metadata.Name {
		bad("container does not take its environment from ConfigMap %s", cm.Metadata.Name)
	}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	for name := range env {
		if !slices.Contains(workerVariables, name) {
			bad("variable %s is not one the worker reads", name)
		}
	}
	if _, ok := env["VERSORI_API_KEY"]; ok {
		bad("VERSORI_API_KEY is set in the manifests; mount the key as a file (VERSORI_API_KEY_FILE)")
	}
	shutdown, err1 := time.ParseDuration(env["WORKER_SHUTDOWN_TIMEOUT"])
	callTimeout, err2 := time.ParseDuration(env["VERSORI_TIMEOUT"])
	maxWait, err3 := time.ParseDuration(env["IMPORT_RATE_MAX_WAIT"])
	if err1 != nil || err2 != nil || err3 != nil {
		bad("WORKER_SHUTDOWN_TIMEOUT, VERSORI_TIMEOUT and IMPORT_RATE_MAX_WAIT must be set as durations: %v %v %v", err1, err2, err3)
	} else {
		if shutdown <= callTimeout+maxWait {
			bad("WORKER_SHUTDOWN_TIMEOUT %s does not outlast a handler (VERSORI_TIMEOUT %s + IMPORT_RATE_MAX_WAIT %s)", shutdown, callTimeout, maxWait)
		}
		if g := pod.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second < shutdown+10*time.Second {
			bad("terminationGracePeriodSeconds %v must exceed WORKER_SHUTDOWN_TIMEOUT %s by 10s or more", deref(g), shutdown)
		}
	}

	// The API key: a Secret mounted read-only, the file variable naming it.
	keyFile := env["VERSORI_API_KEY_FILE"]
	keyMounted := false
	for _, vm := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(keyFile, strings.TrimSuffix(vm.MountPath, "/")+"/")
		if !ok {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name != vm.Name || v.Secret == nil {
				continue
			}
			for _, it := range v.Secret.Items {
				if it.Path == rel && vm.ReadOnly {
					keyMounted = true
				}
			}
		}
	}
	if keyFile == "" || !keyMounted {
		bad("VERSORI_API_KEY_FILE %q is not a file of a Secret volume mounted read-only", keyFile)
	}
	if redis := envVarNamed(c.Env, "REDIS_URL"); redis == nil || redis.ValueFrom == nil || redis.ValueFrom.SecretKeyRef == nil {
		bad("REDIS_URL must come from a Secret (it may carry a password)")
	}

	// Probes on the metrics port, which must be METRICS_ADDR's.
	metricsPort := 0
	for _, p := range c.Ports {
		if p.Name == "metrics" {
			metricsPort = p.ContainerPort
		}
	}
	if _, port, err := net.SplitHostPort(env["METRICS_ADDR"]); err != nil || port != fmt.Sprint(metricsPort) {
		bad("container port metrics %d is not METRICS_ADDR %q", metricsPort, env["METRICS_ADDR"])
	}
	for name, pr := range map[string]struct {
		p    *probe
		path string
	}{"liveness": {c.LivenessProbe, "/healthz"}, "readiness": {c.ReadinessProbe, "/readyz"}} {
		if pr.p == nil || pr.p.HTTPGet == nil || pr.p.HTTPGet.Path != pr.path || (pr.p.HTTPGet.Port != "metrics" && pr.p.HTTPGet.Port != float64(metricsPort)) {
			bad("%s probe must GET %s on the metrics port", name, pr.path)
		}
	}

	// Resources and security context.
	for _, res := range []string{"cpu", "memory"} {
		if c.Resources.Requests[res] == "" {
			bad("no %s request", res)
		}
	}
	if c.Resources.Limits["memory"] == "" {
		bad("no memory limit")
	}
	if pod.SecurityContext == nil || !isTrue(pod.SecurityContext.RunAsNonRoot) || pod.SecurityContext.RunAsUser == nil || *pod.SecurityContext.RunAsUser == 0 {
		bad("pod must run as a non-root user")
	}
	if sc := c.SecurityContext; sc == nil || !isTrue(sc.ReadOnlyRootFilesystem) || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		bad("container needs readOnlyRootFilesystem: true and allowPrivilegeEscalation: false")
	}

	// The Service, ServiceMonitor, PDB and ScaledObject must find the pods.
	if !subset(svc.Spec.Selector, podLabels) || len(svc.Spec.Selector) == 0 {
		bad("Service selector %v does not select the pods", svc.Spec.Selector)
	}
	if !subset(budget.Spec.Selector.MatchLabels, podLabels) || len(budget.Spec.Selector.MatchLabels) == 0 {
		bad("PodDisruptionBudget selector does not select the pods")
	}
	if budget.Spec.MinAvailable == nil && budget.Spec.MaxUnavailable == nil {
		bad("PodDisruptionBudget sets neither minAvailable nor maxUnavailable")
	}
	if !subset(sm.Spec.Selector.MatchLabels, svc.Metadata.Labels) || len(sm.Spec.Selector.MatchLabels) == 0 {
		bad("ServiceMonitor selector does not select the Service")
	}
	svcPorts := map[string]bool{}
	for _, p := range svc.Spec.Ports {
		svcPorts[p.Name] = true
	}
	if len(sm.Spec.Endpoints) == 0 || !svcPorts[sm.Spec.Endpoints[0].Port] || sm.Spec.Endpoints[0].Path != "/metrics" {
		bad("ServiceMonitor must scrape /metrics on a named port of the Service")
	}
	// The rules expect job="versori-import": the Service's name.
	if svc.Metadata.Name != "versori-import" {
		bad("Service is %s; the alert rules expect job versori-import", svc.Metadata.Name)
	}
	if so.Spec.ScaleTargetRef.Name != d.Metadata.Name {
		bad("ScaledObject scales %s, not the Deployment %s", so.Spec.ScaleTargetRef.Name, d.Metadata.Name)
	}
	if so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount < 1 {
		bad("ScaledObject must not scale to zero: the workers export the queue figures it reads")
	}
	if so.Spec.MaxReplicaCount == nil || *so.Spec.MaxReplicaCount < deref(so.Spec.MinReplicaCount) {
		bad("ScaledObject maxReplicaCount below minReplicaCount")
	}
	if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "prometheus" ||
		!strings.Contains(so.Spec.Triggers[0].Metadata["query"], `queue="`+env["WORKER_QUEUE"]+`"`) {
		bad("ScaledObject needs one prometheus trigger on the queue WORKER_QUEUE names (%s)", env["WORKER_QUEUE"])
	}
	return errs
}

func envVarNamed(env []envVar, name string) *envVar {
	for i := range env {
		if env[i].Name == name {
			return &env[i]
		}
	}
	return nil
}

func subset(sub, super map[string]string) bool {
	for k, v := range sub {
		if super[k] != v {
			return false
		}
	}
	return true
}

func isTrue(b *bool) bool { return b != nil && *b }

func deref(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

// TestKustomizeBase renders deploy/kubernetes with kustomize's library and
// checks the result.
func TestKustomizeBase(t *testing.T) {
	r, err := kustomize("kubernetes")
	if err != nil {
		t.Fatalf("kustomize build: %v", err)
	}
	for _, kind := range []string{"Deployment", "ConfigMap", "Service", "ServiceAccount", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule", "ScaledObject"} {
		if len(r[kind]) == 0 {
			t.Errorf("no %s rendered", kind)
		}
	}
	for _, err := range checkManifests(r) {
		t.Error(err)
	}
}

// TestKustomizeChecksCatchMistakes breaks a copy of the base in the ways the
// checks exist for and expects each to be reported.
func TestKustomizeChecksCatchMistakes(t *testing.T) {
	tests := []struct {
		file, old, new string
		want           string
	}{
		{"deployment.yaml", "terminationGracePeriodSeconds: 90", "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds"},
		{"deployment.yaml", "path: /readyz", "path: /healthz", "readiness probe"},
		{"deployment.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem"},
		{"deployment.yaml", "value: /var/run/secrets/versori/api-key", "value: /etc/api-key", "VERSORI_API_KEY_FILE"},
		{"deployment.yaml", "runAsNonRoot: true\n        runAsUser: 65532", "runAsNonRoot: false\n        runAsUser: 65532", "non-root"},
		{"kustomization.yaml", "WORKER_SHUTDOWN_TIMEOUT=60s", "WORKER_SHUTDOWN_TIMEOUT=30s", "does not outlast"},
		{"kustomization.yaml", "LOG_LEVEL=info", "LOG_LEVL=info", "LOG_LEVL"},
		{"kustomization.yaml", "METRICS_ADDR=:9090", "METRICS_ADDR=:8080", "METRICS_ADDR"},
		{"poddisruptionbudget.yaml", "app.kubernetes.io/component: worker", "app.kubernetes.io/component: web", "PodDisruptionBudget"},
		{"scaledobject.yaml", "minReplicaCount: 2", "minReplicaCount: 0", "scale to zero"},
		{"service.yaml", "name: metrics\n", "name: http\n", "ServiceMonitor"},
	}
	for _, tc := range tests {
		t.Run(tc.file+"/"+tc.want, func(t *testing.T) {
			dir := copyDir(t, "kubernetes")
			p := filepath.Join(dir, tc.file)
			b := string(readFile(t, p))
			if !strings.Contains(b, tc.old) {
				t.Fatalf("%s no longer holds %q; update this test", tc.file, tc.old)
			}
			must(t, os.WriteFile(p, []byte(strings.Replace(b, tc.old, tc.new, 1)), 0o644))
			r, err := kustomize(dir)
			if err != nil {
				t.Fatalf("kustomize build: %v", err)
			}
			errs := checkManifests(r)
			for _, err := range errs {
				if strings.Contains(err.Error(), tc.want) {
					return
				}
			}
			t.Errorf("no error mentioning %q; got %v", tc.want, errs)
		})
	}
}

// TestKustomizeMissingResource checks that a kustomization naming a file
// that is not there fails to render.
func TestKustomizeMissingResource(t *testing.T) {
	dir := copyDir(t, "kubernetes")
	must(t, os.Remove(filepath.Join(dir, "poddisruptionbudget.yaml")))
	if _, err := kustomize(dir); err == nil {
		t.Fatal("kustomize rendered a base with a missing resource")
	}
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	must(t, err)
	for _, e := range entries {
		if e.Type().IsRegular() {
			must(t, os.WriteFile(filepath.Join(dst, e.Name()), readFile(t, path.Join(src, e.Name())), 0o644))
		}
	}
	return dst
}
