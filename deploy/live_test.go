package deploy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/versori"
)

// The Dockerfile's binaries are built once per test binary run and shared
// by the tests that need them.
var dockerBuild struct {
	once sync.Once
	dir  string
	pkgs []string
	err  error
}

// TestMain removes the shared build directory after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if dockerBuild.dir != "" {
		os.RemoveAll(dockerBuild.dir)
	}
	os.Exit(code)
}

// builtBinaries runs the Dockerfile's go build once and returns the output
// directory and the packages built. Packages of the Dockerfile without Go
// files yet are left out (logged); one that exists must build.
func builtBinaries(t *testing.T) (dir string, pkgs []string) {
	t.Helper()
	g := dockerGoBuild(t, map[string]string{"VERSION": "v9.9.9-test", "COMMIT": "c0ffee"})
	dockerBuild.once.Do(func() {
		dockerBuild.dir, dockerBuild.err = os.MkdirTemp("", "deploy-build-")
		if dockerBuild.err != nil {
			return
		}
		flags := slices.Clone(g.flags)
		for i := range flags {
			if flags[i] == "-o" {
				flags[i+1] = dockerBuild.dir + string(filepath.Separator)
			}
		}
		for _, p := range g.packages {
			if goFiles, _ := filepath.Glob(filepath.Join("..", p, "*.go")); len(goFiles) > 0 {
				dockerBuild.pkgs = append(dockerBuild.pkgs, p)
			}
		}
		if len(dockerBuild.pkgs) == 0 {
			dockerBuild.err = fmt.Errorf("no package of the Dockerfile (%v) exists", g.packages)
			return
		}
		cmd := exec.Command("go", append(append([]string{"build"}, flags...), dockerBuild.pkgs...)...)
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), g.env...)
		if b, err := cmd.CombinedOutput(); err != nil {
			dockerBuild.err = fmt.Errorf("%v: %v\n%s", cmd.Args, err, b)
		}
	})
	if dockerBuild.err != nil {
		t.Fatal(dockerBuild.err)
	}
	for _, p := range g.packages {
		if !slices.Contains(dockerBuild.pkgs, p) {
			t.Logf("%s has no Go files yet; not built", p)
		}
	}
	return dockerBuild.dir, dockerBuild.pkgs
}

// demoWorker is a worker binary running with --demo.
type demoWorker struct {
	metricsURL string
	redisURL   string
}

// startDemoWorker runs the worker in demo mode (in-process Redis and fake
// API) with its metrics on a free loopback port, waits until it is ready,
// and stops it with SIGTERM when the test ends.
func startDemoWorker(t *testing.T) demoWorker {
	t.Helper()
	if _, err := os.Stat("../cmd/worker"); err != nil {
		t.Skip("cmd/worker does not exist yet")
	}
	dir, pkgs := builtBinaries(t)
	if !slices.Contains(pkgs, "./cmd/worker") {
		t.Skip("cmd/worker has no Go files yet")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := ln.Addr().String()
	ln.Close()

	// The production worker links no demo (it keeps miniredis and the fake
	// API out): build the same package with the Dockerfile's flags and the
	// demo tag, as `make demo` does.
	demoBin := filepath.Join(dir, "worker-demo")
	g := dockerGoBuild(t, map[string]string{"VERSION": "v9.9.9-test", "COMMIT": "c0ffee"})
	flags := slices.Clone(g.flags)
	for i := range flags {
		if flags[i] == "-o" {
			flags[i+1] = demoBin
		}
	}
	bc := exec.Command("go", append(append([]string{"build", "-tags", "demo"}, flags...), "./cmd/worker")...)
	bc.Dir = ".."
	bc.Env = append(os.Environ(), g.env...)
	if b, err := bc.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", bc.Args, err, b)
	}
	cmd := exec.Command(demoBin, "--demo")
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"METRICS_ADDR=" + addr, "IMPORT_RATE_LIMIT=200", "LOG_LEVEL=info",
	}
	out, err := cmd.StdoutPipe()
	must(t, err)
	cmd.Stderr = cmd.Stdout
	must(t, cmd.Start())
	exited := make(chan error, 1)
	redisURL := make(chan string, 1)
	var logTail []string
	var logMu sync.Mutex
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			logMu.Lock()
			logTail = append(logTail, line)
			if len(logTail) > 20 {
				logTail = logTail[1:]
			}
			logMu.Unlock()
			var rec struct {
				RedisURL string `json:"redis_url"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.RedisURL != "" {
				select {
				case redisURL <- rec.RedisURL:
				default:
				}
			}
		}
		io.Copy(io.Discard, out)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Error("worker did not stop within 60s of SIGTERM")
		}
	})
	logs := func() string {
		logMu.Lock()
		defer logMu.Unlock()
		return strings.Join(logTail, "\n")
	}

	w := demoWorker{metricsURL: "http://" + addr}
	select {
	case w.redisURL = <-redisURL:
	case err := <-exited:
		t.Fatalf("worker exited: %v\n%s", err, logs())
	case <-time.After(30 * time.Second):
		t.Fatalf("worker logged no redis_url in 30s\n%s", logs())
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(w.metricsURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker not ready in 30s (%v)\n%s", err, logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	resp, err := http.Get(w.metricsURL + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %v %v", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}
	return w
}

// scrape returns the worker's metric families.
func scrape(url string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// TestLiveWorker runs the worker binary in demo mode, starts a rollout on
// its Redis (plus one undecodable task, which the worker must skip as
// poison), and scrapes /metrics until every family the dashboard and alerts
// rely on has shown up with the right type. Families that exist only while
// something is happening (a rollout's series) are collected across scrapes.
// Then every query of the dashboard, the rules and the KEDA trigger is
// checked against what the live worker exported.
func TestLiveWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the worker")
	}
	w := startDemoWorker(t)

	opt, err := redis.ParseURL(w.redisURL)
	must(t, err)
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	orgs := make([]versori.OrgID, 300)
	for i := range orgs {
		orgs[i] = versori.MustParseOrgID(ulid.Make().String())
	}
	p := tasks.NewProducer(rdb, tasks.ProducerConfig{})
	r := tasks.Rollout{ID: "deploy-live-test", ConnectorID: versori.ConnectorID(ulid.Make().String()), Version: "1.0.0"}
	if _, err := p.EnqueueAll(ctx, r, slices.Values(orgs), nil); err != nil {
		t.Fatalf("enqueue rollout: %v", err)
	}
	client := asynq.NewClientFromRedisClient(rdb)
	if _, err := client.EnqueueContext(ctx, asynq.NewTask(tasks.TypeImport, []byte("not a payload")), asynq.Queue(tasks.DefaultQueue), asynq.MaxRetry(0)); err != nil {
		t.Fatalf("enqueue poison task: %v", err)
	}

	seen := map[string]*dto.MetricFamily{}
	missing := func() []string {
		var m []string
		for name := range wantFamilies {
			if mf := seen[name]; mf == nil || len(mf.GetMetric()) == 0 {
				m = append(m, name)
			}
		}
		slices.Sort(m)
		return m
	}
	deadline := time.Now().Add(90 * time.Second)
	for len(missing()) > 0 && time.Now().Before(deadline) {
		got, err := scrape(w.metricsURL)
		if err != nil {
			t.Fatalf("scrape: %v", err)
		}
		for name, mf := range got {
			if prev := seen[name]; prev == nil || len(prev.GetMetric()) == 0 || len(mf.GetMetric()) > 0 {
				seen[name] = mf
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	if m := missing(); len(m) > 0 {
		t.Errorf("after a rollout, the worker never exported %v; a labelled family shows only once a child exists, so the worker should create its known label values at start", m)
	}
	checkFamilies(t, seen)
	// The API's families come from cmd/api, not the worker: its queries
	// (the HTTP API row, VersoriImportAPIErrorRatioHigh) are checked
	// against a registry set up as cmd/api does.
	for name, mf := range apiRegistryFamilies(t) {
		if _, ok := apiFamilies[name]; ok {
			seen[name] = mf
		}
	}
	for _, err := range queryErrors(seen, allQueries(t)) {
		t.Error(err)
	}
}
