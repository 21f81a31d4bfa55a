package deploy_test

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
)

// apiVariables are the environment variables cmd/api reads.
var apiVariables = []string{
	"REDIS_URL", "API_ADDR", "API_TOKENS_FILE", "API_RATE_LIMIT", "CALLBACK_ALLOWED_HOSTS",
	"WORKER_QUEUE", "IMPORT_RATE_KEY", "LOG_LEVEL",
}

// checkAPIManifests returns every way the rendered API base falls short.
func checkAPIManifests(r rendered) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	var d deployment
	var cm configMap
	var svc service
	var sm serviceMonitor
	for kind, v := range map[string]any{"Deployment": &d, "ConfigMap": &cm, "Service": &svc, "ServiceMonitor": &sm} {
		if err := r.one(kind, v); err != nil {
			bad("%s: %v", kind, err)
		}
	}
	if len(errs) > 0 {
		return errs
	}
	pod := d.Spec.Template.Spec
	podLabels := d.Spec.Template.Metadata.Labels
	if podLabels["app.kubernetes.io/component"] != "api" {
		bad("API pods are labelled component %q, want api (the worker's Service and ServiceMonitor select component worker)", podLabels["app.kubernetes.io/component"])
	}
	if !subset(d.Spec.Selector.MatchLabels, podLabels) || len(d.Spec.Selector.MatchLabels) == 0 {
		bad("Deployment selector does not select its pods")
	}
	if len(pod.Containers) != 1 {
		return append(errs, fmt.Errorf("Deployment has %d containers, want 1", len(pod.Containers)))
	}
	c := pod.Containers[0]
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
		if !slices.Contains(apiVariables, name) {
			bad("variable %s is not one cmd/api reads", name)
		}
	}
	for _, secretish := range []string{"VERSORI_API_KEY", "VERSORI_API_KEY_FILE", "CALLBACK_SECRET"} {
		if _, ok := env[secretish]; ok {
			bad("%s is set: the API holds no Versori key and signs no callbacks", secretish)
		}
	}
	if redis := envVarNamed(c.Env, "REDIS_URL"); redis == nil || redis.ValueFrom == nil || redis.ValueFrom.SecretKeyRef == nil {
		bad("REDIS_URL must come from a Secret")
	}
	tokFile := env["API_TOKENS_FILE"]
	mounted := false
	for _, vm := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(tokFile, strings.TrimSuffix(vm.MountPath, "/")+"/")
		if !ok || !vm.ReadOnly {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == vm.Name && v.Secret != nil {
				for _, it := range v.Secret.Items {
					mounted = mounted || it.Path == rel
				}
			}
		}
	}
	if tokFile == "" || !mounted {
		bad("API_TOKENS_FILE %q is not a file of a Secret volume mounted read-only", tokFile)
	}
	port := 0
	for _, p := range c.Ports {
		if p.Name == "http" {
			port = p.ContainerPort
		}
	}
	if _, p, err := net.SplitHostPort(env["API_ADDR"]); err != nil || p != fmt.Sprint(port) {
		bad("container port http %d is not API_ADDR %q", port, env["API_ADDR"])
	}
	for name, pr := range map[string]struct {
		p    *probe
		path string
	}{"liveness": {c.LivenessProbe, "/healthz"}, "readiness": {c.ReadinessProbe, "/readyz"}} {
		if pr.p == nil || pr.p.HTTPGet == nil || pr.p.HTTPGet.Path != pr.path || (pr.p.HTTPGet.Port != "http" && pr.p.HTTPGet.Port != float64(port)) {
			bad("%s probe must GET %s on the http port", name, pr.path)
		}
	}
	if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
		bad("cpu and memory requests and a memory limit are needed")
	}
	if pod.SecurityContext == nil || !isTrue(pod.SecurityContext.RunAsNonRoot) || pod.SecurityContext.RunAsUser == nil || *pod.SecurityContext.RunAsUser == 0 {
		bad("pod must run as a non-root user")
	}
	if sc := c.SecurityContext; sc == nil || !isTrue(sc.ReadOnlyRootFilesystem) || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		bad("container needs readOnlyRootFilesystem: true and allowPrivilegeEscalation: false")
	}
	if !subset(svc.Spec.Selector, podLabels) || len(svc.Spec.Selector) == 0 {
		bad("Service selector %v does not select the API pods", svc.Spec.Selector)
	}
	svcPorts := map[string]bool{}
	for _, p := range svc.Spec.Ports {
		svcPorts[p.Name] = true
	}
	if !subset(sm.Spec.Selector.MatchLabels, svc.Metadata.Labels) || len(sm.Spec.Endpoints) == 0 || !svcPorts[sm.Spec.Endpoints[0].Port] || sm.Spec.Endpoints[0].Path != "/metrics" {
		bad("ServiceMonitor must select the API Service and scrape /metrics on a named port")
	}
	return errs
}

// TestKustomizeAPI renders deploy/kubernetes/api and checks it against what
// cmd/api reads and needs.
func TestKustomizeAPI(t *testing.T) {
	r, err := kustomize("kubernetes/api")
	if err != nil {
		t.Fatalf("kustomize build: %v", err)
	}
	for _, err := range checkAPIManifests(r) {
		t.Error(err)
	}
	// The worker's base must not pick up the API's pods.
	w, err := kustomize("kubernetes")
	if err != nil {
		t.Fatal(err)
	}
	var svc service
	if err := w.one("Service", &svc); err != nil || svc.Spec.Selector["app.kubernetes.io/component"] != "worker" {
		t.Errorf("worker Service selects %v: %v", svc.Spec.Selector, err)
	}
}

// TestKustomizeAPIChecksCatchMistakes breaks the API base in the ways the
// checks exist for and expects each to be reported.
func TestKustomizeAPIChecksCatchMistakes(t *testing.T) {
	for _, tc := range []struct{ file, old, new, want string }{
		{"deployment.yaml", "path: /readyz", "path: /ready", "readiness probe"},
		{"deployment.yaml", "readOnly: true", "readOnly: false", "API_TOKENS_FILE"},
		{"kustomization.yaml", "API_ADDR=:8080", "API_ADDR=:8081", "API_ADDR"},
		{"kustomization.yaml", "LOG_LEVEL=info", "LOGLEVEL=info", "LOGLEVEL"},
		{"service.yaml", "app.kubernetes.io/component: api\n  ports", "app.kubernetes.io/component: apis\n  ports", "Service selector"},
	} {
		t.Run(tc.file+" "+tc.want, func(t *testing.T) {
			dir := copyDir(t, "kubernetes/api")
			path := dir + "/" + tc.file
			b := string(readFile(t, path))
			if !strings.Contains(b, tc.old) {
				t.Fatalf("%s no longer holds %q; update this test", tc.file, tc.old)
			}
			writeFileT(t, path, strings.Replace(b, tc.old, tc.new, 1))
			r, err := kustomize(dir)
			if err != nil {
				t.Fatalf("kustomize build: %v", err)
			}
			for _, err := range checkAPIManifests(r) {
				if strings.Contains(err.Error(), tc.want) {
					return
				}
			}
			t.Errorf("no error mentioning %q", tc.want)
		})
	}
}

func writeFileT(t *testing.T, path, s string) {
	t.Helper()
	must(t, os.WriteFile(path, []byte(s), 0o644))
}
