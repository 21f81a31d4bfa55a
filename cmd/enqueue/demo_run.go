//go:build demo

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/versori/import-worker/internal/buildinfo"
	"github.com/versori/import-worker/internal/demo"
	"github.com/versori/import-worker/internal/redisconn"
	"github.com/versori/import-worker/internal/worker"
	"github.com/versori/import-worker/metrics"
	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/versori"
	"github.com/versori/import-worker/versori/versoritest"
)

func (d *demoCmd) runDemo(cmd *cobra.Command) error {
	ctx := cmd.Context()
	dir, err := os.MkdirTemp("", "versori-demo-")
	if err != nil {
		return fmt.Errorf("demo directory: %w", err)
	}
	env, err := demo.Start(demo.Options{FaultRates: map[versoritest.FaultKind]float64{
		versoritest.FaultRateLimited: 0.001,
		versoritest.FaultServerError: 0.03,
	}})
	if err != nil {
		return err
	}
	defer env.Close()

	// The organisations, some of which the API will never find.
	orgsPath := filepath.Join(dir, "orgs.txt")
	var list strings.Builder
	var missing []string
	list.WriteString("# demo organisations, one ULID a line\n")
	for i := range d.size {
		org := ulid.Make().String()
		if i < d.notFound {
			env.API.SetFault(org, versoritest.Fault{Kind: versoritest.FaultNotFound})
			missing = append(missing, org)
		}
		list.WriteString(org + "\n")
	}
	if err := os.WriteFile(orgsPath, []byte(list.String()), 0o644); err != nil {
		return fmt.Errorf("demo organisations: %w", err)
	}

	stopWorker, metricsURL, err := d.startWorker(ctx, env, dir)
	if err != nil {
		return err
	}
	defer stopWorker()
	stopConsole, consoleURL, consoleToken, err := d.startConsole(env, dir)
	if err != nil {
		return err
	}
	defer stopConsole()

	rolloutID := "demo-" + time.Now().UTC().Format("20060102-150405")
	reportPath := filepath.Join(dir, "report.csv")
	fmt.Fprintf(d.stderr, "DEMO MODE: an in-memory Redis, a fake Versori API (60 ms latency, some 429s and 503s, %d permanent 404s)\n", d.notFound)
	fmt.Fprintf(d.stderr, "and a worker (%d handlers, %s imports/s for the fleet) in this process; nothing is kept.\n",
		d.concurrency, strconv.FormatFloat(d.rate, 'f', -1, 64))
	fmt.Fprintf(d.stderr, "worker metrics: %s   worker log: %s\n", metricsURL, filepath.Join(dir, "worker.log"))
	fmt.Fprintf(d.stderr, "console: %s   sign in with the operator token %s\n\n", consoleURL, consoleToken)

	connector := ulid.Make().String()
	steps := [][]string{
		{"--connector", connector, "--version", "1.4.0", "--orgs", orgsPath, "--rollout", rolloutID},
		{"status", rolloutID, "--watch", "--interval", "500ms", "--timeout", d.timeout.String()},
		{"report", rolloutID, "--format", "csv", "--output", reportPath},
		{"report", rolloutID, "--format", "csv", "--state", "failed"},
	}
	if err := d.steps(ctx, env.RedisURL, steps); err != nil {
		return err
	}
	if len(missing) > 0 {
		// Whatever made them fail is fixed: re-drive just those.
		fmt.Fprintf(d.stderr, "# the fake API now finds the %d missing organisations: re-drive them\n", len(missing))
		for _, org := range missing {
			env.API.SetFault(org, versoritest.Fault{})
		}
		if err := d.steps(ctx, env.RedisURL, [][]string{
			{"retry", rolloutID, "--class", "not_found"},
			{"status", rolloutID, "--watch", "--interval", "200ms", "--timeout", d.timeout.String()},
		}); err != nil {
			return err
		}
	}
	fmt.Fprintf(d.stderr, "CSV report (before the retry): %s\n", reportPath)
	return nil
}

// steps runs enqueue commands against the demo's Redis, printing each as an
// operator would type it.
func (d *demoCmd) steps(ctx context.Context, redisURL string, steps [][]string) error {
	for _, args := range steps {
		fmt.Fprintf(d.stderr, "$ enqueue %s\n", strings.Join(args, " "))
		sub := &app{stdin: d.stdin, stdout: d.stdout, stderr: d.stderr, getenv: noEnv, isTerminal: d.isTerminal, now: d.now}
		if code := run(ctx, sub, append(args, "--redis-url", redisURL)); code != exitOK {
			return &exitError{code: code, err: fmt.Errorf("demo step failed: enqueue %s", strings.Join(args, " "))}
		}
		fmt.Fprintln(d.stderr)
	}
	return nil
}

// startWorker runs the worker service in this process against the demo
// environment until the returned stop function is called.
func (d *demoCmd) startWorker(ctx context.Context, env *demo.Env, dir string) (stop func(), metricsURL string, err error) {
	logFile, err := os.Create(filepath.Join(dir, "worker.log"))
	if err != nil {
		return nil, "", fmt.Errorf("worker log: %w", err)
	}
	rdb, err := redisconn.New(env.RedisURL, redisconn.Options{PoolSize: 2*d.concurrency + 10})
	if err != nil {
		logFile.Close()
		return nil, "", err
	}
	client, err := versori.New(versori.Config{BaseURL: env.APIURL, APIKey: env.APIKey, MaxConnsPerHost: d.concurrency})
	if err != nil {
		rdb.Close()
		logFile.Close()
		return nil, "", err
	}
	addr := d.metricsAddr
	if ln, err := net.Listen("tcp", addr); err != nil {
		addr = "127.0.0.1:0"
	} else {
		ln.Close()
	}
	wctx, cancel := context.WithCancel(ctx)
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- worker.Run(wctx, worker.Config{
			Redis:       rdb,
			Client:      client,
			Logger:      slog.New(slog.NewJSONHandler(logFile, nil)),
			Concurrency: d.concurrency,
			RateLimit:   d.rate,
			// Short backoff: the demo's 503s should come back in seconds.
			Backoff:     tasks.Backoff{Base: 250 * time.Millisecond, Cap: 2 * time.Second},
			MetricsAddr: addr,
			Registry:    prometheus.NewRegistry(),
			Build:       metrics.BuildInfo{Version: buildinfo.Version, Commit: buildinfo.Commit},
			Ready:       ready,
		})
	}()
	stop = func() {
		cancel()
		<-done
		rdb.Close()
		logFile.Close()
	}
	select {
	case a, ok := <-ready:
		if !ok || a == nil {
			stop()
			return nil, "", errors.New("demo worker started without a metrics listener")
		}
		return stop, "http://" + a.String() + "/metrics", nil
	case err := <-done:
		cancel()
		rdb.Close()
		logFile.Close()
		if err == nil {
			err = errors.New("stopped at start")
		}
		return nil, "", fmt.Errorf("demo worker: %w", err)
	}
}

// noEnv hides the environment from the demo's own steps: they must talk to
// the demo's Redis, whatever the shell says.
func noEnv(string) string { return "" }
