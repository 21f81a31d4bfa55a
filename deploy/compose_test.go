package deploy_test

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// TestFilesParse parses every YAML and JSON file under deploy/, each
// document of a multi-document YAML file on its own.
func TestFilesParse(t *testing.T) {
	n := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		switch filepath.Ext(path) {
		case ".yml", ".yaml":
			for i, doc := range bytes.Split(b, []byte("\n---\n")) {
				var v any
				if err := yaml.Unmarshal(doc, &v); err != nil {
					t.Errorf("%s: document %d: %v", path, i+1, err)
				} else if v == nil {
					t.Errorf("%s: document %d is empty", path, i+1)
				}
			}
			n++
		case ".json":
			if !json.Valid(b) {
				t.Errorf("%s: invalid JSON", path)
			}
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 15 {
		t.Errorf("parsed only %d files", n)
	}
}

// composeFile is the part of compose.yaml the test reads. Anchors and
// merge keys are resolved by the YAML decoder.
type composeFile struct {
	Services map[string]struct {
		Image       string            `json:"image"`
		Entrypoint  []string          `json:"entrypoint"`
		Command     []string          `json:"command"`
		Environment map[string]string `json:"environment"`
		Volumes     []string          `json:"volumes"`
		NetworkMode string            `json:"network_mode"`
		StopGrace   string            `json:"stop_grace_period"`
		ReadOnly    bool              `json:"read_only"`
		User        string            `json:"user"`
		Secrets     []string          `json:"secrets"`
		Profiles    []string          `json:"profiles"`
		Build       *struct{ Context, Dockerfile string }
	} `json:"services"`
	Secrets map[string]struct {
		File string `json:"file"`
	} `json:"secrets"`
}

// TestCompose checks the compose file against what the worker, the
// Prometheus configuration and the Grafana provisioning expect.
func TestCompose(t *testing.T) {
	var c composeFile
	if err := yaml.Unmarshal(readFile(t, "compose.yaml"), &c); err != nil {
		t.Fatal(err)
	}

	redis, ok := c.Services["redis"]
	if !ok {
		t.Fatal("no redis service")
	}
	cmd := strings.Join(redis.Command, " ")
	for _, want := range []string{"--appendonly yes", "--maxmemory-policy noeviction"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("redis runs %q, want %s", cmd, want)
		}
	}

	fake := c.Services["fakeapi"]
	if got := strings.Join(append(fake.Entrypoint, fake.Command...), " "); !strings.Contains(got, "/fakeapi --addr 0.0.0.0:8081 --allow-remote") {
		t.Errorf("fakeapi runs %q", got)
	}

	// The workers: two, each scraped by prometheus.yml on its port.
	conf := string(readFile(t, prometheusConfPath))
	workers := 0
	for name, s := range c.Services {
		if s.Environment["REDIS_URL"] == "" || len(s.Entrypoint) > 0 {
			continue // not a worker (the enqueue tool has an entrypoint)
		}
		workers++
		for k := range s.Environment {
			if !slices.Contains(workerVariables, k) {
				t.Errorf("%s: %s is not a variable the worker reads", name, k)
			}
		}
		_, port, err := net.SplitHostPort(s.Environment["METRICS_ADDR"])
		if err != nil {
			t.Errorf("%s: METRICS_ADDR %q: %v", name, s.Environment["METRICS_ADDR"], err)
		} else if !strings.Contains(conf, "'fakeapi:"+port+"'") || !strings.Contains(conf, "instance: "+name) {
			t.Errorf("%s: prometheus.yml does not scrape fakeapi:%s as instance %s", name, port, name)
		}
		if s.NetworkMode != "service:fakeapi" || !strings.HasPrefix(s.Environment["VERSORI_BASE_URL"], "http://127.0.0.1:8081/") {
			t.Errorf("%s must reach the fake API on loopback (plain http is refused elsewhere)", name)
		}
		shutdown, err1 := time.ParseDuration(s.Environment["WORKER_SHUTDOWN_TIMEOUT"])
		grace, err2 := time.ParseDuration(s.StopGrace)
		if err1 != nil || err2 != nil || grace <= shutdown {
			t.Errorf("%s: stop_grace_period %q must exceed WORKER_SHUTDOWN_TIMEOUT %q", name, s.StopGrace, s.Environment["WORKER_SHUTDOWN_TIMEOUT"])
		}
		keyFile := s.Environment["VERSORI_API_KEY_FILE"]
		if len(s.Secrets) != 1 || keyFile != "/run/secrets/"+s.Secrets[0] {
			t.Errorf("%s: VERSORI_API_KEY_FILE %q is not its compose secret", name, keyFile)
		}
		if _, set := s.Environment["VERSORI_API_KEY"]; set {
			t.Errorf("%s: the key belongs in a file, not VERSORI_API_KEY", name)
		}
		if !s.ReadOnly || s.User == "" || strings.HasPrefix(s.User, "0") {
			t.Errorf("%s: want read_only and a non-root user", name)
		}
	}
	if workers != 2 {
		t.Errorf("%d worker services, want 2", workers)
	}

	// Prometheus loads the rules; Grafana gets the provisioning and the
	// dashboards where the provider looks.
	mounts := func(svc string) map[string]string {
		m := map[string]string{}
		for _, v := range c.Services[svc].Volumes {
			parts := strings.Split(v, ":")
			if len(parts) >= 2 && strings.HasPrefix(parts[0], ".") {
				if _, err := os.Stat(parts[0]); err != nil {
					t.Errorf("%s mounts %s, which does not exist", svc, parts[0])
				}
				m[parts[1]] = filepath.Clean(parts[0])
			}
		}
		return m
	}
	prom := mounts("prometheus")
	if prom["/etc/prometheus/rules.yml"] != filepath.Clean(rulesPath) || prom["/etc/prometheus/prometheus.yml"] != filepath.Clean(prometheusConfPath) {
		t.Errorf("prometheus mounts %v; want rules.yml and prometheus.yml in /etc/prometheus", prom)
	}
	graf := mounts("grafana")
	var provider struct {
		Providers []struct {
			Options struct {
				Path string `json:"path"`
			} `json:"options"`
		} `json:"providers"`
	}
	must(t, yaml.Unmarshal(readFile(t, "grafana/provisioning/dashboards/versori-import.yml"), &provider))
	if len(provider.Providers) != 1 || graf[provider.Providers[0].Options.Path] != filepath.Dir(dashboardPath) {
		t.Errorf("grafana mounts %v; the dashboard provider reads %+v", graf, provider.Providers)
	}
	if graf["/etc/grafana/provisioning"] != "grafana/provisioning" {
		t.Errorf("grafana does not mount the provisioning directory: %v", graf)
	}
	for name, s := range c.Secrets {
		if _, err := os.Stat(s.File); err != nil {
			t.Errorf("secret %s: %v", name, err)
		}
	}
}
