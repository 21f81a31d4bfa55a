// Package dashboard builds the Grafana dashboard of the import worker.
//
// The dashboard is Go code rather than hand-edited JSON so that every query
// names its metrics through the constants of package metrics: a renamed
// metric breaks the build or the deploy tests, not a panel in production.
// deploy/grafana/dashboards/versori-import.json is this package's output
// (go generate ./deploy/..., which runs deploy/cmd/gendeploy), and a test
// keeps the two equal.
//
// Aggregation follows what each metric measures. Per-process figures
// (calls, handlers, memory) are summed across replicas. Shared state read
// from Redis at scrape time (asynq's queue figures, rollout progress, the
// shared cool-down, the queue pause) is identical on every replica, so it is
// aggregated with max: summing it would multiply it by the replica count.
package dashboard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/versori/import-worker/metrics"
)

const (
	// UID is the dashboard's stable identifier; links and provisioning
	// refer to it.
	UID = "versori-import"
	// Queue is the asynq queue the worker serves.
	Queue = "imports"
	// ErrorRatioThreshold is drawn on the error ratio panel; it matches
	// VersoriImportErrorRatioHigh in deploy/prometheus/rules.yml.
	ErrorRatioThreshold = 0.1
	// OldestTaskThreshold (seconds) is drawn on the oldest-task panel; it
	// matches VersoriImportQueueNotDraining.
	OldestTaskThreshold = 900
)

// filter selects the series of the chosen jobs and instances; every
// selector carries it.
const filter = `job=~"$job",instance=~"$instance"`

// Error selectors, as in VersoriImportErrorRatioHigh: a failed call is one
// that neither imported nor found the version present; 429s (rate_limited)
// are left out of both sides of the ratio.
const (
	successClasses = "imported|already_present"
	errorSelector  = `class!~"` + successClasses + `|rate_limited"`
	answered       = `class!="rate_limited"`
)

var promDS = &Datasource{Type: "prometheus", UID: "${datasource}"}

// sel returns a selector of name with the job/instance filter and extra
// matchers.
func sel(name string, matchers ...string) string {
	return name + "{" + strings.Join(append([]string{filter}, matchers...), ",") + "}"
}

// rate returns rate(sel(name, matchers...)[$__rate_interval]).
func rate(name string, matchers ...string) string {
	return "rate(" + sel(name, matchers...) + "[$__rate_interval])"
}

// quantile returns the q-quantile of histogram name across the fleet.
func quantile(q float64, name string) string {
	return fmt.Sprintf("histogram_quantile(%g, sum by (le) (%s))", q, rate(name+"_bucket"))
}

// mean returns the mean observation of histogram name across the fleet.
func mean(name string) string {
	return fmt.Sprintf("sum(%s) / sum(%s)", rate(name+"_sum"), rate(name+"_count"))
}

// q is shorthand for a target with a legend.
func q(expr, legend string) *Target {
	return &Target{Expr: expr, LegendFormat: legend}
}

// layout places panels left to right, wrapping onto a new line of the
// 24-column grid, and numbers them.
type layout struct {
	panels []*Panel
	x, y   int
	rowH   int
	nextID int
}

func (l *layout) row(title string) {
	if l.x > 0 {
		l.y += l.rowH
		l.x, l.rowH = 0, 0
	}
	collapsed := false
	l.nextID++
	l.panels = append(l.panels, &Panel{
		ID: l.nextID, Type: "row", Title: title, Collapsed: &collapsed,
		GridPos: GridPos{H: 1, W: 24, X: 0, Y: l.y},
	})
	l.y++
}

func (l *layout) add(w, h int, p *Panel) {
	if l.x+w > 24 {
		l.y += l.rowH
		l.x, l.rowH = 0, 0
	}
	l.nextID++
	p.ID = l.nextID
	p.GridPos = GridPos{H: h, W: w, X: l.x, Y: l.y}
	p.Datasource = promDS
	for i, t := range p.Targets {
		t.RefID = string(rune('A' + i))
		t.Datasource = promDS
		if !t.Instant {
			t.Range = true
		}
	}
	l.x += w
	l.rowH = max(l.rowH, h)
	l.panels = append(l.panels, p)
}

// timeseries returns a time series panel; stack piles the series up, which
// suits parts of a whole (states, classes).
func timeseries(title, desc, unit string, stack bool, targets ...*Target) *Panel {
	custom := map[string]any{"fillOpacity": 10, "lineWidth": 1, "showPoints": "never", "spanNulls": false}
	if stack {
		custom["stacking"] = map[string]any{"mode": "normal", "group": "A"}
		custom["fillOpacity"] = 60
	}
	return &Panel{
		Type: "timeseries", Title: title, Description: desc, Targets: targets,
		FieldConfig: &FieldConfig{
			Defaults:  map[string]any{"unit": unit, "min": 0, "custom": custom},
			Overrides: []Override{},
		},
		Options: map[string]any{
			"legend":  map[string]any{"displayMode": "table", "placement": "bottom", "showLegend": true, "calcs": []string{"lastNotNull", "max"}},
			"tooltip": map[string]any{"mode": "multi", "sort": "desc"},
		},
	}
}

// stat returns a stat panel showing the last value of each target.
func stat(title, desc, unit string, targets ...*Target) *Panel {
	for _, t := range targets {
		t.Instant = true
	}
	return &Panel{
		Type: "stat", Title: title, Description: desc, Targets: targets,
		FieldConfig: &FieldConfig{
			Defaults: map[string]any{
				"unit":       unit,
				"thresholds": thresholds("green"),
				"mappings":   []any{},
			},
			Overrides: []Override{},
		},
		Options: map[string]any{
			"reduceOptions": map[string]any{"calcs": []string{"lastNotNull"}, "fields": "", "values": false},
			"colorMode":     "value", "graphMode": "none", "textMode": "value_and_name", "justifyMode": "auto",
			"orientation": "auto",
		},
	}
}

// thresholds returns absolute thresholds starting at base colour, then the
// given value/colour pairs.
func thresholds(base string, steps ...any) map[string]any {
	list := []map[string]any{{"color": base, "value": nil}}
	for i := 0; i+1 < len(steps); i += 2 {
		list = append(list, map[string]any{"value": steps[i], "color": steps[i+1]})
	}
	return map[string]any{"mode": "absolute", "steps": list}
}

// thresholdLine draws the panel's thresholds as a dashed line, to show an
// alert's threshold on the graph it watches.
func thresholdLine(p *Panel, value float64) {
	p.FieldConfig.Defaults["thresholds"] = thresholds("green", value, "red")
	p.FieldConfig.Defaults["custom"].(map[string]any)["thresholdsStyle"] = map[string]any{"mode": "dashed"}
}

// override applies properties to the series whose display name is name.
func override(p *Panel, name string, props ...map[string]any) {
	p.FieldConfig.Overrides = append(p.FieldConfig.Overrides, Override{
		Matcher:    map[string]any{"id": "byName", "options": name},
		Properties: props,
	})
}

func color(c string) map[string]any {
	return map[string]any{"id": "color", "value": map[string]any{"mode": "fixed", "fixedColor": c}}
}

func noStack() map[string]any {
	return map[string]any{"id": "custom.stacking", "value": map[string]any{"mode": "none", "group": "A"}}
}

func dashed() map[string]any {
	return map[string]any{"id": "custom.lineStyle", "value": map[string]any{"fill": "dash", "dash": []int{10, 10}}}
}

func rightAxis(unit string) []map[string]any {
	return []map[string]any{
		{"id": "custom.axisPlacement", "value": "right"},
		{"id": "unit", "value": unit},
	}
}

// valueMap maps the numbers of a 0/1 gauge to words and colours.
func valueMap(p *Panel, zero, zeroColor, one, oneColor string) {
	p.FieldConfig.Defaults["mappings"] = []any{map[string]any{
		"type": "value",
		"options": map[string]any{
			"0": map[string]any{"text": zero, "color": zeroColor, "index": 0},
			"1": map[string]any{"text": one, "color": oneColor, "index": 1},
		},
	}}
	p.FieldConfig.Defaults["thresholds"] = thresholds(zeroColor, 1, oneColor)
}

// New returns the dashboard.
func New() *Dashboard {
	l := &layout{}

	l.row("Rollouts")
	rolloutSel := sel(metrics.NameRolloutOrgs, `rollout=~"$rollout"`)
	progress := timeseries("Rollout progress",
		"Organisations of each selected active rollout by state (max across replicas: every replica reads the same ledger). A rollout's series end when it is done.",
		"short", true,
		q("max by (rollout, state) ("+rolloutSel+")", "{{rollout}} {{state}}"))
	l.add(12, 9, progress)
	completion := &Panel{
		Type: "bargauge", Title: "Rollout completion",
		Description: "Share of each selected active rollout's organisations in a final state (succeeded, failed or cancelled).",
		Targets: []*Target{{
			Instant: true, LegendFormat: "{{rollout}}",
			Expr: "sum by (rollout) (max by (rollout, state) (" + sel(metrics.NameRolloutOrgs, `rollout=~"$rollout"`, `state=~"succeeded|failed|cancelled"`) + "))" +
				" / sum by (rollout) (max by (rollout, state) (" + rolloutSel + "))",
		}},
		FieldConfig: &FieldConfig{
			Defaults:  map[string]any{"unit": "percentunit", "min": 0, "max": 1, "thresholds": thresholds("blue", 1, "green")},
			Overrides: []Override{},
		},
		Options: map[string]any{
			"displayMode": "gradient", "orientation": "horizontal", "showUnfilled": true,
			"reduceOptions": map[string]any{"calcs": []string{"lastNotNull"}, "fields": "", "values": false},
		},
	}
	l.add(6, 9, completion)
	l.add(6, 9, stat("Rollouts started and finished",
		"Rollouts recorded in the ledger (max across replicas).",
		"short",
		q("max("+sel(metrics.NameRolloutsStarted)+") - max("+sel(metrics.NameRolloutsFinished)+")", "active"),
		q("max("+sel(metrics.NameRolloutsStarted)+")", "started"),
		q("max("+sel(metrics.NameRolloutsFinished)+")", "finished")))
	l.add(24, 8, timeseries("Organisations finished",
		"Organisations reaching a final state per second, by state and class; each organisation counts once however often its task ran.",
		"ops", true,
		q("sum by (state, class) ("+rate(metrics.NameOrgsFinished)+")", "{{state}} {{class}}")))

	l.row("API calls and the rate budget")
	vsLimit := timeseries("Import rate vs the fleet limit",
		"Import calls per second made by the whole fleet, slots granted by the shared budget, and the configured limit. The calls the API sees must stay under 1.05 × the limit in any second.",
		"reqps", false,
		q("sum("+rate(metrics.NameImports)+")", "API calls"),
		q("sum("+rate(metrics.NameRateGranted)+")", "budget slots granted"),
		q("max("+sel(metrics.NameRateLimit)+")", "limit"),
		q("max("+sel(metrics.NameRateLimit)+") * 1.05", "limit × 1.05"))
	override(vsLimit, "limit", color("red"))
	override(vsLimit, "limit × 1.05", color("dark-red"), dashed())
	l.add(12, 8, vsLimit)
	classes := timeseries("Outcome classes",
		"Import calls per second by outcome class.",
		"reqps", true,
		q("sum by (class) ("+rate(metrics.NameImports)+")", "{{class}}"))
	for _, c := range [][2]string{
		{"imported", "green"}, {"already_present", "dark-green"}, {"rate_limited", "orange"},
		{"server_error", "red"}, {"timeout", "semi-dark-red"}, {"network", "dark-red"},
		{"unauthorized", "purple"}, {"forbidden", "dark-purple"}, {"not_found", "yellow"}, {"invalid", "dark-yellow"},
	} {
		override(classes, c[0], color(c[1]))
	}
	l.add(12, 8, classes)
	errRatio := timeseries("Error ratio",
		"Share of answered import calls (429s aside) that failed, overall and by class. The dashed line is the VersoriImportErrorRatioHigh threshold.",
		"percentunit", false,
		q("sum("+rate(metrics.NameImports, errorSelector)+") / sum("+rate(metrics.NameImports, answered)+")", "all errors"),
		q("sum by (class) ("+rate(metrics.NameImports, errorSelector)+") / ignoring (class) group_left sum("+rate(metrics.NameImports, answered)+")", "{{class}}"))
	thresholdLine(errRatio, ErrorRatioThreshold)
	l.add(8, 8, errRatio)
	l.add(8, 8, timeseries("Import call latency",
		"Latency of import calls across the fleet.",
		"s", false,
		q(quantile(0.5, metrics.NameCallDuration), "p50"),
		q(quantile(0.95, metrics.NameCallDuration), "p95"),
		q(quantile(0.99, metrics.NameCallDuration), "p99"),
		q(mean(metrics.NameCallDuration), "mean")))
	l.add(8, 8, stat("Budget",
		"Configured fleet-wide limit and burst, and the share of the limit used over the last 5 minutes.",
		"none",
		q("max("+sel(metrics.NameRateLimit)+")", "limit (calls/s)"),
		q("max("+sel(metrics.NameRateBurst)+")", "burst"),
		q("sum(rate("+sel(metrics.NameImports)+"[5m])) / max("+sel(metrics.NameRateLimit)+")", "used")))

	l.row("Rate-limit waits and 429 cool-downs")
	l.add(8, 8, timeseries("Waiting for the budget",
		"Time handlers waited for their slot of the shared budget.",
		"s", false,
		q(quantile(0.5, metrics.NameRateWait), "p50"),
		q(quantile(0.95, metrics.NameRateWait), "p95"),
		q(quantile(0.99, metrics.NameRateWait), "p99"),
		q(mean(metrics.NameRateWait), "mean")))
	l.add(8, 8, timeseries("Deferred tasks and 429s",
		"Tasks handed back as rate_limited, by reason (budget: their slot was too far away; cooldown, api_429: a 429 cool-down; breaker: the fleet's circuit breaker held them, without using an attempt); 429 answers from the API; shared cool-downs started.",
		"ops", false,
		q("sum by (reason) ("+rate(metrics.NameRateDeferred)+")", "deferred: {{reason}}"),
		q("sum("+rate(metrics.NameImports, `class="rate_limited"`)+")", "429 answers"),
		q("sum("+rate(metrics.NameCoolDowns)+")", "cool-downs started")))
	cool := timeseries("Shared cool-down",
		"Whether the fleet's shared cool-down after a 429 is in force, and the seconds it has left (max across replicas: it is shared state).",
		"short", false,
		q("max("+sel(metrics.NameCoolDownActive)+")", "active"),
		q("max("+sel(metrics.NameCoolDownRemaining)+")", "remaining"))
	override(cool, "remaining", rightAxis("s")...)
	l.add(8, 8, cool)
	l.add(8, 8, timeseries("Budget's Redis cost",
		"Calls of the rate budget's booking script (one Redis round trip each: bookings, and answers sent on their own) per API call, fleet-wide. About 1; benchmarks figure 7 holds it under 1.1. Below it, the booked slots left unused per API call, by reason (late: the handler woke past the late tolerance, a loaded host; lowered: the fleet's rate fell to under half the slot's, a steep cut; cooldown: inside a cool-down the replica started; breaker: the breaker opened meanwhile), each a script call spent.",
		"short", false,
		q("sum("+rate(metrics.NameRateBudgetScripts)+") / sum("+rate(metrics.NameImports)+")", "script calls per API call"),
		q("sum by (reason) ("+rate(metrics.NameRateSlotsDropped)+") / scalar(sum("+rate(metrics.NameImports)+"))", "slots dropped: {{reason}}")))

	fleetRow(l)
	wavesRow(l)
	apiRow(l)

	l.row("Queue")
	depth := timeseries("Queue depth by state",
		"Tasks of the imports queue by state (max across replicas: every replica reads the same Redis). Size counts archived tasks too.",
		"short", true,
		q("max by (state) ("+sel("asynq_tasks_enqueued_total", `queue="`+Queue+`"`, `state!="completed"`)+")", "{{state}}"),
		q("max("+sel("asynq_queue_size", `queue="`+Queue+`"`)+")", "size"))
	override(depth, "size", noStack(), dashed(), color("text"))
	l.add(12, 8, depth)
	oldest := timeseries("Oldest pending task age",
		"How long the oldest pending task has waited. A long rollout is paced by the budget, so age alone is not an alarm; the dashed line is VersoriImportQueueNotDraining's threshold.",
		"s", false,
		q("max("+sel("asynq_queue_latency_seconds", `queue="`+Queue+`"`)+")", "oldest pending"))
	thresholdLine(oldest, OldestTaskThreshold)
	l.add(6, 8, oldest)
	l.add(6, 8, timeseries("Tasks processed and failed",
		"Tasks asynq finished per second (succeeded or failed) and failed, from its shared counters (max across replicas).",
		"ops", false,
		q("max("+rate("asynq_tasks_processed_total", `queue="`+Queue+`"`)+")", "processed"),
		q("max("+rate("asynq_tasks_failed_total", `queue="`+Queue+`"`)+")", "failed")))
	paused := stat("Queue paused (401)",
		"The worker pauses the queue after a 401 from the API, since the key is wrong for everyone; an operator may pause it too. Worker view and asynq's own flag.",
		"none",
		q("max("+sel(metrics.NamePaused)+")", "worker"),
		q("max("+sel("asynq_queue_paused_total", `queue="`+Queue+`"`)+")", "asynq"))
	valueMap(paused, "running", "green", "PAUSED", "red")
	paused.Options["colorMode"] = "background"
	l.add(6, 5, paused)
	unauth := stat("401 answers",
		"401 answers from the API in the dashboard's time range; each one pauses the queue.",
		"short",
		q("sum(increase("+sel(metrics.NameUnauthorized)+"[$__range]))", "401s"))
	unauth.FieldConfig.Defaults["thresholds"] = thresholds("green", 1, "red")
	l.add(6, 5, unauth)
	archived := stat("Archived tasks",
		"Tasks asynq gave up on; they run again only when re-driven.",
		"short",
		q("max("+sel("asynq_tasks_enqueued_total", `queue="`+Queue+`"`, `state="archived"`)+")", "archived"))
	archived.FieldConfig.Defaults["thresholds"] = thresholds("green", 1, "orange")
	l.add(6, 5, archived)
	l.add(6, 5, stat("Queue memory in Redis",
		"Approximate Redis memory used by the imports queue (asynq samples it).",
		"bytes",
		q("max("+sel("asynq_queue_memory_usage_approx_bytes", `queue="`+Queue+`"`)+")", "memory")))

	l.row("Workers")
	busy := timeseries("Busy handlers vs concurrency",
		"Handlers running a task, tasks in flight (waiting for the budget or calling the API) and calls waiting for the API, against the fleet's total concurrency.",
		"short", false,
		q("sum("+sel(metrics.NameHandlersBusy)+")", "busy handlers"),
		q("sum("+sel(metrics.NameHandlersMax)+")", "concurrency"),
		q("sum("+sel(metrics.NameTasksInFlight)+")", "tasks in flight"),
		q("sum("+sel(metrics.NameCallsInFlight)+")", "API calls in flight"))
	override(busy, "concurrency", color("red"), dashed())
	l.add(8, 8, busy)
	l.add(8, 8, timeseries("Retries and skips",
		"Retries scheduled per second by the class that caused them, and tasks skipped without a call (already final in the ledger) by reason.",
		"ops", false,
		q("sum by (class) ("+rate(metrics.NameRetries)+")", "retry: {{class}}"),
		q("sum by (reason) ("+rate(metrics.NameSkipped)+")", "skipped: {{reason}}")))
	l.add(8, 8, timeseries("Attempts per organisation",
		"API calls spent on each organisation that reached a final state.",
		"short", false,
		q(quantile(0.5, metrics.NameAttemptsPerOrg), "p50"),
		q(quantile(0.95, metrics.NameAttemptsPerOrg), "p95"),
		q(mean(metrics.NameAttemptsPerOrg), "mean")))
	l.add(8, 8, timeseries("Memory",
		"Resident memory and Go heap in use, per replica.",
		"bytes", false,
		q(sel("process_resident_memory_bytes"), "{{instance}} resident"),
		q(sel("go_memstats_heap_inuse_bytes"), "{{instance}} heap in use")))
	l.add(8, 8, timeseries("Goroutines",
		"Goroutines per replica; a steady climb with a flat workload is a leak.",
		"short", false,
		q(sel("go_goroutines"), "{{instance}}")))
	l.add(8, 8, timeseries("CPU",
		"CPU used per replica, in cores.",
		"short", false,
		q(rate("process_cpu_seconds_total"), "{{instance}}")))
	versions := &Panel{
		Type: "table", Title: "Replicas",
		Description: "Replicas scraped, with the version and commit each runs.",
		Targets: []*Target{{
			Instant: true, Format: "table",
			Expr: sel(metrics.NameBuildInfo),
		}},
		FieldConfig: &FieldConfig{Defaults: map[string]any{}, Overrides: []Override{}},
		Options:     map[string]any{"showHeader": true},
	}
	l.add(12, 6, versions)
	l.add(4, 6, stat("Replicas up",
		"Targets of the selected jobs that Prometheus scraped successfully.",
		"short",
		q(`sum(up{`+filter+`})`, "up")))
	errs := stat("Collector errors",
		"Failures of the collectors that read Redis at scrape time, over the dashboard's time range; while they fail, the rollout panels miss data.",
		"short",
		q("sum by (collector) (increase("+sel(metrics.NameCollectorScrapeErrs)+"[$__range]))", "{{collector}}"))
	errs.FieldConfig.Defaults["thresholds"] = thresholds("green", 1, "orange")
	l.add(4, 6, errs)
	l.add(4, 6, stat("Redis failover holds",
		"Sentinel failovers over the dashboard's time range, as the replicas lived through them: the holds of a replica's Redis commands while the sentinels promoted a replica (the old master's writes in that second would be lost), and the seconds they held, for the replica with the most (about 1 s a failover; a hold ends after 10 s at most).",
		"short",
		q("max(increase("+sel(metrics.NameRedisFailoverHold+"_count")+"[$__range]))", "failovers"),
		q("max(increase("+sel(metrics.NameRedisFailoverHold+"_sum")+"[$__range]))", "seconds held")))

	return &Dashboard{
		UID:   UID,
		Title: "Versori import worker",
		Description: "Rollouts, API calls against the fleet-wide rate budget, the asynq queue and the worker pool. " +
			"Shared-state metrics are aggregated with max across replicas, never summed.",
		Tags:          []string{"versori", "import-worker"},
		Editable:      true,
		GraphTooltip:  1,
		Refresh:       "30s",
		SchemaVersion: 39,
		Version:       1,
		Timezone:      "browser",
		Time:          TimeRange{From: "now-3h", To: "now"},
		Annotations: Annotations{List: []map[string]any{{
			"builtIn": 1, "datasource": map[string]any{"type": "grafana", "uid": "-- Grafana --"},
			"enable": true, "hide": true, "iconColor": "rgba(0, 211, 255, 1)",
			"name": "Annotations & Alerts", "type": "dashboard",
		}, {
			// A wave released, baking, passed or halted marks every panel.
			"datasource": map[string]any{"type": "prometheus", "uid": "${datasource}"},
			"enable":     true, "hide": false, "iconColor": "purple", "name": "Wave transitions",
			"expr":        "sum by (event) (changes(" + sel(metrics.NameWaveEvents) + "[1m])) > 0",
			"step":        "1m",
			"titleFormat": "wave {{event}}", "textFormat": "rollout wave {{event}}",
			"useValueForTime": false,
		}}},
		Templating: Templating{List: []*Variable{
			{
				Name: "datasource", Label: "Data source", Type: "datasource", Query: "prometheus",
				Refresh: 1, Current: map[string]any{}, Options: []any{},
			},
			queryVar("job", "Job", "label_values("+metrics.NameBuildInfo+", job)"),
			queryVar("instance", "Instance", "label_values("+metrics.NameBuildInfo+`{job=~"$job"}, instance)`),
			queryVar("rollout", "Rollout", "label_values("+metrics.NameRolloutOrgs+`{job=~"$job"}, rollout)`),
		}},
		Panels: l.panels,
	}
}

// wavesRow adds the row of canary waves and the fleet's releaser: wave
// decisions (the same events annotate every panel), halted rollouts
// (VersoriImportRolloutHalted fires above 0) and what the releaser hands to
// the queue.
func wavesRow(l *layout) {
	l.row("Waves and release")
	l.add(10, 8, timeseries("Wave decisions",
		"Wave decisions of the fleet's releaser per minute, by event: released (a wave after the first), baking (a wave finished within its failure ratio), gate_passed, halted. Counted once fleet-wide, by the lease holder, so summed. The same events annotate the dashboard.",
		"short", true,
		q("sum by (event) (increase("+sel(metrics.NameWaveEvents)+"[1m]))", "{{event}}")))
	halted := stat("Halted rollouts",
		"Rollouts halted at a wave's gate, waiting for `enqueue promote` or `enqueue cancel` (shared state: max across replicas). VersoriImportRolloutHalted fires above 0.",
		"short",
		q("max("+sel(metrics.NameRolloutsHalted)+")", "halted"))
	halted.FieldConfig.Defaults["thresholds"] = thresholds("green", 1, "red")
	l.add(4, 8, halted)
	l.add(10, 8, timeseries("Released to the queue",
		"Organisations handed from rollouts' backlogs to the queue per second (by the process holding the releaser's lease, a short window ahead of the handlers), copies of tasks a dead worker left active (rescued, run before asynq's lease recovery), and which process holds the lease.",
		"ops", false,
		q("sum("+rate(metrics.NameReleased)+")", "released"),
		q("sum("+rate(metrics.NameRescued)+")", "rescued"),
		q("max by (instance) ("+sel(metrics.NameReleaserLeader)+")", "leader {{instance}}")))
}

// apiRow adds the RED row of the HTTP API (cmd/api): requests by route and
// code, the 5xx share (VersoriImportAPIErrorRatioHigh fires above 5%) and
// latency by route. The route label is the route pattern, so the series are
// bounded whatever the traffic.
func apiRow(l *layout) {
	l.row("HTTP API")
	l.add(8, 8, timeseries("API requests by route and code",
		"Requests per second to the HTTP API (cmd/api) by route pattern and status code, summed over its replicas. 401/403 are callers with a missing, wrong or reader token; 429 a token over its rate limit; 503 Redis unreachable.",
		"reqps", false,
		q("sum by (route, code) ("+rate(metrics.NameAPIRequests)+")", "{{route}} {{code}}")))
	errs := timeseries("API 5xx share",
		"Share of API requests answered 5xx (503: Redis unreachable; 500: a bug). Above 5% for 10 minutes fires VersoriImportAPIErrorRatioHigh.",
		"percentunit", false,
		q("sum("+rate(metrics.NameAPIRequests, `code=~"5.."`)+") / sum("+rate(metrics.NameAPIRequests)+")", "5xx share"))
	errs.FieldConfig.Defaults["max"] = 1
	thresholdLine(errs, 0.05)
	override(errs, "5xx share", color("red"))
	l.add(8, 8, errs)
	l.add(8, 8, timeseries("API latency by route (p99)",
		"99th percentile of the time to the end of the answer, by route pattern; a streamed report counts the whole stream.",
		"s", false,
		q("histogram_quantile(0.99, sum by (le, route) ("+rate(metrics.NameAPIRequestDuration+"_bucket")+"))", "{{route}}")))
}

// fleetRow adds the row of the adaptive fleet rate and the circuit breaker.
// The rate gauges and the breaker state are shared state (every replica reads
// them from Redis), so they are aggregated with max; the decision and
// transition counters count what each process caused, so they are summed.
func fleetRow(l *layout) {
	l.row("Fleet rate and breaker")
	fleet := timeseries("Fleet rate vs ceiling",
		"The rate the fleet may call at now (the learned rate below the ceiling when the budget is adaptive), the configured ceiling (IMPORT_RATE_LIMIT), the highest rate the API was recently seen to accept, the floor the budget backs off to, and the calls actually made. All but the calls are shared state (max across replicas). A fleet rate far below the ceiling for long means the ceiling is wrong (ImportRateFarBelowCeiling).",
		"reqps", false,
		q("max("+sel(metrics.NameFleetRate)+")", "fleet rate"),
		q("max("+sel(metrics.NameRateLimit)+")", "ceiling"),
		q("max("+sel(metrics.NameRateAccepted)+")", "accepted"),
		q("max("+sel(metrics.NameRateFloor)+")", "floor"),
		q("sum("+rate(metrics.NameImports)+")", "API calls"))
	override(fleet, "fleet rate", color("blue"))
	override(fleet, "ceiling", color("red"), dashed())
	override(fleet, "accepted", color("green"))
	override(fleet, "floor", color("orange"), dashed())
	override(fleet, "API calls", color("text"))
	l.add(12, 8, fleet)
	share := timeseries("429 share",
		"Share of all import calls the API answered with 429 (class rate_limited). The adaptive budget cuts the fleet rate on 429s, so a lasting share above a few percent means the rate is still above what the API grants.",
		"percentunit", false,
		q("sum("+rate(metrics.NameImports, `class="rate_limited"`)+") / sum("+rate(metrics.NameImports)+")", "429 share"))
	share.FieldConfig.Defaults["max"] = 1
	override(share, "429 share", color("orange"))
	l.add(6, 8, share)
	mode := stat("Rate mode",
		"Whether the fleet learns the API's rate below the ceiling (adaptive, IMPORT_RATE_ADAPTIVE) or calls on a fixed schedule at the ceiling (shared state, max across replicas).",
		"none",
		q("max("+sel(metrics.NameRateAdaptive)+")", "rate"))
	valueMap(mode, "fixed", "blue", "adaptive", "green")
	l.add(6, 8, mode)

	// One series for the breaker: 0 closed, 1 half open, 2 open.
	breaker := &Panel{
		Type: "state-timeline", Title: "Breaker state",
		Description: "The fleet's circuit breaker (shared state, max across replicas). Open: the API fails broadly, so tasks are held (deferred with reason breaker) without using attempts; half open: a few probe calls test whether it recovered. Open or half open for 10 minutes fires ImportBreakerOpen.",
		Targets: []*Target{q(
			"max("+sel(metrics.NameBreakerState, `state="open"`)+") * 2 + max("+sel(metrics.NameBreakerState, `state="half_open"`)+")",
			"breaker")},
		FieldConfig: &FieldConfig{
			Defaults: map[string]any{
				"color":      map[string]any{"mode": "thresholds"},
				"thresholds": thresholds("green", 1, "orange", 2, "red"),
				"mappings": []any{map[string]any{
					"type": "value",
					"options": map[string]any{
						"0": map[string]any{"text": "closed", "color": "green", "index": 0},
						"1": map[string]any{"text": "half open", "color": "orange", "index": 1},
						"2": map[string]any{"text": "OPEN", "color": "red", "index": 2},
					},
				}},
				"custom": map[string]any{"fillOpacity": 80, "lineWidth": 0},
			},
			Overrides: []Override{},
		},
		Options: map[string]any{
			"showValue": "auto", "mergeValues": true, "alignValue": "left", "rowHeight": 0.9,
			"legend":  map[string]any{"displayMode": "list", "placement": "bottom", "showLegend": false},
			"tooltip": map[string]any{"mode": "single", "sort": "none"},
		},
	}
	l.add(12, 6, breaker)
	decisions := timeseries("Rate decisions and breaker transitions",
		"Decisions of the adaptive rate per second by event (cut: lowered to just below the rate the API accepted, after 429s; probe_failed: a ramp towards the ceiling met 429s and fell back; headers: set from the API's rate-limit headers), and transitions of the circuit breaker by event, summed over the replicas that caused them.",
		"ops", false,
		q("sum by (event) ("+rate(metrics.NameRateChanges)+")", "rate: {{event}}"),
		q("sum by (event) ("+rate(metrics.NameBreakerTransitions)+")", "breaker: {{event}}"))
	custom := decisions.FieldConfig.Defaults["custom"].(map[string]any)
	custom["drawStyle"] = "bars"
	custom["fillOpacity"] = 80
	l.add(12, 6, decisions)
}

// queryVar returns a multi-value variable filled from a label_values query;
// "All" is a match-anything regex so series that appear after the variable
// was refreshed are still shown.
func queryVar(name, label, query string) *Variable {
	return &Variable{
		Name: name, Label: label, Type: "query", Datasource: promDS,
		Query:      VariableQuery{Query: query, RefID: "PrometheusVariableQueryEditor-VariableQuery"},
		Definition: query, Refresh: 2, Multi: true, IncludeAll: true, AllValue: ".*", Sort: 1,
		Current: map[string]any{"selected": true, "text": []string{"All"}, "value": []string{"$__all"}},
		Options: []any{},
	}
}

// JSON returns the dashboard as indented JSON with a trailing newline, the
// form committed under deploy/grafana/dashboards.
func (d *Dashboard) JSON() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(d); err != nil {
		return nil, fmt.Errorf("encode dashboard %s: %w", d.UID, err)
	}
	return buf.Bytes(), nil
}
