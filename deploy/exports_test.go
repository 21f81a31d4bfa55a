package deploy_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/metrics"
)

// family is what the dashboard and alerts rely on about one metric family.
type family struct {
	typ    dto.MetricType
	labels []string // besides the target labels job and instance
}

var (
	counter   = dto.MetricType_COUNTER
	gauge     = dto.MetricType_GAUGE
	histogram = dto.MetricType_HISTOGRAM
)

// wantFamilies lists every family the worker must export, with its type and
// labels: the list, and what deploy/ queries. A family dropped from
// package metrics, or one whose type or labels change, fails here before a
// panel goes blank.
var wantFamilies = map[string]family{
	metrics.NameImports:             {counter, []string{"class", "status_class"}},
	metrics.NameCallDuration:        {histogram, []string{"class"}},
	metrics.NameCallsInFlight:       {gauge, nil},
	metrics.NameReleased:            {counter, nil},
	metrics.NameRescued:             {counter, nil},
	metrics.NameWaveEvents:          {counter, []string{"event"}},
	metrics.NameReleaserLeader:      {gauge, nil},
	metrics.NameRolloutsHalted:      {gauge, nil},
	metrics.NameOrgsFinished:        {counter, []string{"class", "state"}},
	metrics.NameAttemptsPerOrg:      {histogram, nil},
	metrics.NameRetries:             {counter, []string{"class"}},
	metrics.NameSkipped:             {counter, []string{"reason"}},
	metrics.NameRateLimit:           {gauge, nil},
	metrics.NameRateBurst:           {gauge, nil},
	metrics.NameRateGranted:         {counter, nil},
	metrics.NameRateWait:            {histogram, nil},
	metrics.NameRateDeferred:        {counter, []string{"reason"}},
	metrics.NameCoolDowns:           {counter, nil},
	metrics.NameRateBudgetScripts:   {counter, nil},
	metrics.NameCoolDownActive:      {gauge, nil},
	metrics.NameCoolDownRemaining:   {gauge, nil},
	metrics.NamePaused:              {gauge, nil},
	metrics.NameFleetRate:           {gauge, nil},
	metrics.NameRateAccepted:        {gauge, nil},
	metrics.NameRateFloor:           {gauge, nil},
	metrics.NameRateAdaptive:        {gauge, nil},
	metrics.NameRateChanges:         {counter, []string{"event"}},
	metrics.NameBreakerState:        {gauge, []string{"state"}},
	metrics.NameBreakerTransitions:  {counter, []string{"event"}},
	metrics.NameUnauthorized:        {counter, nil},
	metrics.NameHandlersBusy:        {gauge, nil},
	metrics.NameHandlersMax:         {gauge, nil},
	metrics.NameTasksInFlight:       {gauge, nil},
	metrics.NameRolloutOrgs:         {gauge, []string{"rollout", "state"}},
	metrics.NameRolloutsStarted:     {counter, nil},
	metrics.NameRolloutsFinished:    {counter, nil},
	metrics.NameBuildInfo:           {gauge, []string{"commit", "goversion", "version"}},
	metrics.NameCollectorScrapeErrs: {counter, []string{"collector"}},
	metrics.NameRedisFailoverHold:   {histogram, nil},
	metrics.NameRateSlotsDropped:    {counter, []string{"reason"}},

	// asynq's queue collector (github.com/hibiken/asynq/x/metrics). Its
	// tasks_enqueued_total is a gauge of tasks by state, despite the name.
	"asynq_tasks_enqueued_total":            {gauge, []string{"queue", "state"}},
	"asynq_queue_size":                      {gauge, []string{"queue"}},
	"asynq_queue_latency_seconds":           {gauge, []string{"queue"}},
	"asynq_queue_memory_usage_approx_bytes": {gauge, []string{"queue"}},
	"asynq_tasks_processed_total":           {counter, []string{"queue"}},
	"asynq_tasks_failed_total":              {counter, []string{"queue"}},
	"asynq_queue_paused_total":              {gauge, []string{"queue"}},

	// Go runtime and process collectors, as far as the dashboard uses them.
	"go_goroutines":                 {gauge, nil},
	"go_memstats_heap_inuse_bytes":  {gauge, nil},
	"process_resident_memory_bytes": {gauge, nil},
	"process_cpu_seconds_total":     {counter, nil},
}

// apiFamilies are the HTTP API's (cmd/api) own families: RED by route
// pattern. The API exports them besides the build info and the Go and
// process collectors; the worker does not.
var apiFamilies = map[string]family{
	metrics.NameAPIRequests:        {counter, []string{"code", "method", "route"}},
	metrics.NameAPIRequestDuration: {histogram, []string{"method", "route"}},
}

// apiRegistryFamilies gathers a registry set up as cmd/api does.
func apiRegistryFamilies(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewRegistry()
	api := metrics.NewAPI(reg)
	api.Requests.WithLabelValues("GET /v1/rollouts/{id}", "GET", "200")
	api.Duration.WithLabelValues("GET /v1/rollouts/{id}", "GET")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// prometheusMade are series Prometheus makes itself for every target.
var prometheusMade = map[string]bool{"up": true}

// targetLabels are attached by Prometheus to every scraped series.
var targetLabels = []string{"job", "instance"}

// rolloutSource is a ledger stand-in with one active rollout.
type rolloutSource struct{}

func (rolloutSource) RolloutFigures(context.Context) ([]metrics.RolloutState, int64, int64, error) {
	return []metrics.RolloutState{{ID: "r1", Pending: 3, Retrying: 1, Succeeded: 5, Failed: 1}}, 2, 1, nil
}

// registeredFamilies registers everything the worker registers (metrics.New,
// the rollout collector, asynq's queue collector on a real Redis holding one
// task in the imports queue) on a fresh registry, gives every labelled
// metric a child so its labels show, and gathers.
func registeredFamilies(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	srv := redistest.Start(t, redistest.Options{})
	opt := asynq.RedisClientOpt{Addr: srv.Addr()}
	client := asynq.NewClient(opt)
	defer client.Close()
	if _, err := client.Enqueue(asynq.NewTask("import", []byte("{}")), asynq.Queue("imports")); err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	inspector := asynq.NewInspector(opt)
	defer inspector.Close()

	reg := prometheus.NewRegistry()
	metrics.NewRedisFailoverHolds(reg) // cmd/worker registers it before the rest
	m := metrics.New(reg, metrics.BuildInfo{Version: "test", Commit: "test"})
	reg.MustRegister(metrics.NewRolloutCollector(rolloutSource{}, m, 5*time.Second, slog.New(slog.DiscardHandler)))
	reg.MustRegister(metrics.QueueCollector(inspector))
	m.Imports.WithLabelValues("imported", "2xx")
	m.CallDuration.WithLabelValues("imported")
	m.OrgsFinished.WithLabelValues("succeeded", "imported")
	m.Retries.WithLabelValues("server_error")
	m.Skipped.WithLabelValues("already_final")
	m.RateDeferred.WithLabelValues("budget")
	m.CollectorErrors.WithLabelValues("rollouts")

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	// cmd/api's families, from its own registry: the queries of the
	// dashboard and the rules are checked against both binaries.
	for name, mf := range apiRegistryFamilies(t) {
		if _, ok := apiFamilies[name]; ok {
			out[name] = mf
		}
	}
	return out
}

// labelNames returns the sorted label names of a family's series.
func labelNames(mf *dto.MetricFamily) []string {
	var names []string
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			if !slices.Contains(names, lp.GetName()) {
				names = append(names, lp.GetName())
			}
		}
	}
	slices.Sort(names)
	return names
}

// checkFamilies reports every wanted family that is missing from got or
// differs in type or labels.
func checkFamilies(t *testing.T, got map[string]*dto.MetricFamily) {
	t.Helper()
	checkFamiliesOf(t, got, wantFamilies)
}

// mergedFamilies is wantFamilies and apiFamilies.
func mergedFamilies() map[string]family {
	m := map[string]family{}
	for k, v := range wantFamilies {
		m[k] = v
	}
	for k, v := range apiFamilies {
		m[k] = v
	}
	return m
}

func checkFamiliesOf(t *testing.T, got map[string]*dto.MetricFamily, want map[string]family) {
	t.Helper()
	for name, want := range want {
		mf, ok := got[name]
		if !ok {
			t.Errorf("family %s is not exported", name)
			continue
		}
		if mf.GetType() != want.typ {
			t.Errorf("family %s has TYPE %s, want %s", name, mf.GetType(), want.typ)
		}
		if len(mf.GetMetric()) == 0 {
			continue
		}
		if got := labelNames(mf); !slices.Equal(got, want.labels) {
			t.Errorf("family %s has labels %v, want %v", name, got, want.labels)
		}
	}
}

// queryErrors returns an error for every selector of the queries that names
// no exported family (a histogram's _bucket, _sum and _count series count
// as its own) or matches on a label that family does not have.
func queryErrors(got map[string]*dto.MetricFamily, queries []query) []error {
	var errs []error
	for _, q := range queries {
		sels, err := selectors(q.expr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", q.where, err))
			continue
		}
		if len(sels) == 0 {
			errs = append(errs, fmt.Errorf("%s: %q selects no metric", q.where, q.expr))
		}
		for _, s := range sels {
			if prometheusMade[s.name] {
				continue
			}
			mf, extra := familyOf(got, s.name)
			if mf == nil {
				errs = append(errs, fmt.Errorf("%s: metric %s is not exported by the worker", q.where, s.name))
				continue
			}
			have := append(append(labelNames(mf), targetLabels...), extra...)
			for _, l := range s.labels {
				if !slices.Contains(have, l) {
					errs = append(errs, fmt.Errorf("%s: %s has no label %q (it has %v)", q.where, s.name, l, have))
				}
			}
		}
	}
	return errs
}

// familyOf returns the family a series name belongs to, and the labels the
// series has beyond the family's (le on a histogram's buckets).
func familyOf(got map[string]*dto.MetricFamily, series string) (*dto.MetricFamily, []string) {
	if mf, ok := got[series]; ok {
		return mf, nil
	}
	for suffix, extra := range map[string][]string{"_bucket": {"le"}, "_sum": nil, "_count": nil} {
		base, ok := strings.CutSuffix(series, suffix)
		if !ok {
			continue
		}
		if mf := got[base]; mf != nil && mf.GetType() == dto.MetricType_HISTOGRAM {
			return mf, extra
		}
	}
	return nil, nil
}

// TestExportedFamilies checks that a fresh registry set up as the worker
// does exports every family the dashboard and alerts rely on, with the
// right type and labels.
func TestExportedFamilies(t *testing.T) {
	got := registeredFamilies(t)
	checkFamilies(t, got)
	checkFamiliesOf(t, got, apiFamilies)
	// The reverse: a new metric in package metrics should reach the
	// dashboard or the alerts, and be listed above.
	for name := range got {
		if strings.HasPrefix(name, metrics.Namespace+"_") {
			_, api := apiFamilies[name]
			if _, ok := wantFamilies[name]; !ok && !api {
				t.Errorf("family %s is exported but not in wantFamilies: add it to the dashboard and to this list", name)
			}
		}
	}
}

// TestQueriesUseExportedMetrics checks every PromQL expression of the
// dashboard, the alert rules and the KEDA trigger against the families a
// fresh registry exports.
func TestQueriesUseExportedMetrics(t *testing.T) {
	got := registeredFamilies(t)
	queries := allQueries(t)
	if len(queries) < 50 {
		t.Fatalf("found only %d queries; is the dashboard being read?", len(queries))
	}
	for _, err := range queryErrors(got, queries) {
		t.Error(err)
	}

	// The check must catch the drift it exists for.
	for _, bad := range []string{
		`sum(rate(versori_import_import_total[5m]))`,                                           // misspelt name
		`sum(rate(versori_import_imports_total{outcome="x"}[5m]))`,                             // no such label
		`histogram_quantile(0.9, rate(versori_import_rate_limit_calls_per_second_bucket[5m]))`, // not a histogram
		`max(asynq_queue_size{queue="imports",state="pending"})`,                               // label of another family
	} {
		if len(queryErrors(got, []query{{where: "bad", expr: bad}})) == 0 {
			t.Errorf("no error for %q", bad)
		}
	}
}

// TestEveryMetricOnDashboardOrAlert checks that each of the worker's own
// families is shown on the dashboard or watched by an alert, so none is
// exported for nobody.
func TestEveryMetricOnDashboardOrAlert(t *testing.T) {
	used := map[string]bool{}
	for _, q := range allQueries(t) {
		sels, err := selectors(q.expr)
		if err != nil {
			t.Fatalf("%s: %v", q.where, err)
		}
		for _, s := range sels {
			used[s.name] = true
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(s.name, suffix); ok {
					used[base] = true
				}
			}
		}
	}
	for name := range mergedFamilies() {
		if !used[name] {
			t.Errorf("%s is neither on the dashboard nor in an alert", name)
		}
	}
}
