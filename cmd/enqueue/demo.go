// The demo runs on miniredis and versoritest, which production binaries
// must not link: its runner (demo_run.go) is built only with -tags demo,
// which `make demo` passes. Without the tag, `enqueue demo` says how to run
// it.

package main

import (
	"time"

	"github.com/spf13/cobra"
)

type demoCmd struct {
	*app
	size        int
	notFound    int
	rate        float64
	concurrency int
	metricsAddr string
	consoleAddr string
	timeout     time.Duration
}

func newDemoCmd(a *app) *cobra.Command {
	d := &demoCmd{app: a}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a whole rollout on embedded defaults: in-memory Redis, fake API, worker",
		Long: `demo runs the whole flow in this one process, on a machine with nothing
installed: an in-memory Redis, a fake Versori API with realistic latency and
some 429s, 503s and permanent 404s, a worker serving /metrics, and a rollout
of generated organisations driven through the same commands an operator
types (enqueue, status --watch, report), which it prints as it runs them.

It keeps nothing: the Redis vanishes when it ends. It refuses to run when
--redis-url or REDIS_URL is set, so it can never be mistaken for real work.
The organisation list, the CSV report and the worker's log stay in a
temporary directory whose path it prints.`,
		Example: "  make demo\n  enqueue demo --orgs 10000 --rate 500",
		Args:    cobra.NoArgs,
		RunE:    runE(d.run),
	}
	f := cmd.Flags()
	f.IntVar(&d.size, "orgs", 3000, "organisations in the rollout")
	f.IntVar(&d.notFound, "not-found", 5, "organisations the fake API answers 404 for (permanent failures)")
	f.Float64Var(&d.rate, "rate", 300, "the worker's import calls per second")
	f.IntVar(&d.concurrency, "concurrency", 50, "the worker's handlers")
	f.StringVar(&d.metricsAddr, "metrics-addr", "127.0.0.1:9090", "where the worker serves /metrics (a free port if taken)")
	f.StringVar(&d.consoleAddr, "console-addr", "127.0.0.1:8080", "where the rollout console is served (a free port if taken)")
	f.DurationVar(&d.timeout, "timeout", 5*time.Minute, "give up if the rollout is not done by then")
	return cmd
}

func (d *demoCmd) run(cmd *cobra.Command, _ []string) error {
	if d.redisURL != "" || d.getenv("REDIS_URL") != "" {
		return usageError("demo runs on its own in-memory Redis and keeps nothing: refusing to run with --redis-url or REDIS_URL set (unset it for the demo; use the other commands for real work)")
	}
	if d.size < 1 || d.notFound < 0 || d.notFound > d.size || d.rate <= 0 || d.concurrency < 1 {
		return usageError("demo needs --orgs >= 1, 0 <= --not-found <= --orgs, --rate > 0 and --concurrency >= 1")
	}
	return d.runDemo(cmd)
}
