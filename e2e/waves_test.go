package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/versori/import-worker/internal/e2etest"
	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/rollout"
	"github.com/versori/import-worker/versori/versoritest"
)

// cli runs the enqueue binary against f's Redis.
func (f *fleet) cli(stdin string, args ...string) (stdout, stderr string, code int) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var in *strings.Reader
	if stdin != "" {
		in = strings.NewReader(stdin)
	}
	if in == nil {
		return e2etest.Run(ctx, e2etest.Bin(f.t, "enqueue"), map[string]string{"REDIS_URL": f.redis.URL()}, nil, args...)
	}
	return e2etest.Run(ctx, e2etest.Bin(f.t, "enqueue"), map[string]string{"REDIS_URL": f.redis.URL()}, in, args...)
}

// orgFile writes the organisations to a file, one a line, and returns its
// path and the IDs in order.
func orgFile(t *testing.T, n, from int) (string, []string) {
	t.Helper()
	var ids []string
	i := 0
	for id := range orgIDs(n + from) {
		if i >= from {
			ids = append(ids, id)
		}
		i++
	}
	p := filepath.Join(t.TempDir(), "orgs.txt")
	if err := os.WriteFile(p, []byte(strings.Join(ids, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, ids
}

func (f *fleet) status(id string) rollout.Status {
	f.t.Helper()
	out, stderr, code := f.cli("", "status", id, "--json")
	if code != 0 {
		f.t.Fatalf("status %s: exit %d: %s", id, code, stderr)
	}
	var st rollout.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		f.t.Fatalf("status %s: %v: %s", id, err, out)
	}
	return st
}

func (f *fleet) waitStatus(id string, timeout time.Duration, ok func(rollout.Status) bool) rollout.Status {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := f.status(id)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("rollout %s: status not reached after %s: %+v", id, timeout, st)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestWavesHaltBadCanary is issue 11's first figure: 2,000 organisations,
// every one from the 11th on answers 422; waves 10,10%,100% with a maximum
// failure ratio of 0.05 halt the rollout with at most 200 organisations
// called and none of the last wave.
func TestWavesHaltBadCanary(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	api := versoritest.NewServer()
	f := newFleet(t, api, redistest.Options{})
	file, ids := orgFile(t, 2000, 0)
	for _, id := range ids[10:] {
		api.SetFault(id, versoritest.Fault{Kind: versoritest.FaultInvalid})
	}
	f.start(2, map[string]string{"IMPORT_RATE_LIMIT": "200", "WORKER_CONCURRENCY": "20"})
	out, stderr, code := f.cli("", "--connector", connectorID, "--version", "1.0.0", "--orgs", file, "--rollout", "canary",
		"--waves", "10,10%,100%", "--max-failure-ratio", "0.05", "--json")
	if code != 0 {
		t.Fatalf("enqueue: exit %d: %s%s", code, out, stderr)
	}
	st := f.waitStatus("canary", time.Minute, func(s rollout.Status) bool { return s.State == rollout.StateHalted })
	time.Sleep(time.Second) // anything still to be called would be by now
	called := 0
	for _, id := range ids {
		called += min(api.Calls(id), 1)
	}
	late := 0
	for _, id := range ids[200:] {
		late += api.Calls(id)
	}
	figure(t, "halted in wave %d of %d: %d organisations called, %d calls to the last wave; reason %q", st.Wave, st.Waves, called, late, st.HaltReason)
	if st.Wave != 2 || called > 200 || late != 0 || st.Done || st.Pending != 1800 || st.Released != 200 {
		t.Fatalf("halted status %+v: %d called, %d calls to wave 3", st, called, late)
	}
	if human, _, _ := f.cli("", "status", "canary"); !strings.Contains(human, "HALTED") {
		t.Fatalf("status does not say HALTED:\n%s", human)
	} else {
		t.Logf("enqueue status canary:\n%s", human)
	}
	// The report shows the held organisations as unreleased.
	rep, stderr, code := f.cli("", "report", "canary", "--format", "csv")
	if code != 0 {
		t.Fatalf("report: exit %d: %s", code, stderr)
	}
	if n := strings.Count(rep, ",unreleased,"); n != 1800 {
		t.Fatalf("%d unreleased rows in the report, want 1800", n)
	}
	// The halt is visible to Prometheus on every replica.
	deadline := time.Now().Add(10 * time.Second)
	for {
		text, err := f.workers[0].Scrape()
		if v, ok := e2etest.MetricSum(text, "versori_import_rollouts_halted"); err == nil && ok && v == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("versori_import_rollouts_halted never 1")
		}
		time.Sleep(200 * time.Millisecond)
	}
	events := 0.0
	for _, w := range f.workers {
		text, _ := w.Scrape()
		for _, line := range strings.Split(text, "\n") {
			if v, ok := strings.CutPrefix(line, `versori_import_wave_events_total{event="halted"} `); ok {
				var x float64
				fmt.Sscan(v, &x)
				events += x
			}
		}
	}
	if events != 1 {
		t.Fatalf("halted events across the fleet: %v, want 1", events)
	}

	// promote lifts the halt: the last wave runs (and fails: the version is
	// bad), then promote has nothing left to release.
	if out, stderr, code := f.cli("", "promote", "canary"); code != 0 {
		t.Fatalf("promote: exit %d: %s%s", code, out, stderr)
	}
	st = f.waitStatus("canary", time.Minute, func(s rollout.Status) bool { return s.Done })
	if st.State != rollout.StateDone || st.Released != 2000 || st.Failed != 1990 {
		t.Fatalf("after promote: %+v", st)
	}
	if _, stderr, code := f.cli("", "promote", "canary"); code != 2 || !strings.Contains(stderr, "last wave") {
		t.Fatalf("promote of a finished rollout: exit %d: %s", code, stderr)
	}
}

// Bad wave input: exit status 2, a message naming the problem, nothing
// enqueued.
func TestWavesBadInput(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	f := newFleet(t, versoritest.NewServer(), redistest.Options{})
	file, _ := orgFile(t, 50, 0)
	base := []string{"--connector", connectorID, "--version", "1.0.0", "--orgs", file, "--rollout", "bad"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--waves", ""}, "empty list"},
		{[]string{"--waves", "0"}, "at least one organisation"},
		{[]string{"--waves", "0%"}, "at least one organisation"},
		{[]string{"--waves", "10,5"}, "not above wave 1"},
		{[]string{"--waves", "150%"}, "above 100%"},
		{[]string{"--waves", "10,60"}, "above the list's 50"},
		{[]string{"--waves", "10", "--bake", "-1s"}, "bake"},
		{[]string{"--waves", "10", "--max-failure-ratio", "1.5"}, "outside [0, 1]"},
		{[]string{"--waves", "10", "--max-failure-ratio", "-0.1"}, "outside [0, 1]"},
		{[]string{"--waves", "10", "--gate-query", "sum(rate(x[5m]", "--gate-condition", "< 1"}, "parse error"},
		{[]string{"--waves", "10", "--gate-query", "up", "--gate-condition", "=> 1"}, "condition"},
		{[]string{"--weight", "0"}, "weight"},
		{[]string{"--bake", "2s"}, "give --waves too"},
	} {
		out, stderr, code := f.cli("", append(slices.Clone(base), tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q, want 2 and %q (stdout %q)", tc.args, code, stderr, tc.want, out)
		}
	}
	if n, err := f.redis.Client().Exists(context.Background(), "versori-import:rollout:{bad}:def").Result(); err != nil || n != 0 {
		t.Fatalf("bad input created the rollout (%d, %v)", n, err)
	}
	for _, tc := range []struct {
		setup func()
		id    string
		want  string
	}{
		{nil, "unknown", "not found"},
		{func() {
			if _, stderr, code := f.cli("", "--connector", connectorID, "--version", "1.0.0", "--orgs", file, "--rollout", "flat"); code != 0 {
				t.Fatalf("enqueue flat: %s", stderr)
			}
		}, "flat", "no waves"},
	} {
		if tc.setup != nil {
			tc.setup()
		}
		if _, stderr, code := f.cli("", "promote", tc.id); code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("promote %s: exit %d, %q; want 2 and %q", tc.id, code, stderr, tc.want)
		}
	}
}

// TestWavesHealthy is issue 11's second figure: a healthy 3,000, waves
// 1%,10%,100% and a bake of 2 s, take at most N/R + the bakes + 2 s a wave.
func TestWavesHealthy(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	const (
		n     = 3000
		rate  = 200
		bake  = 2 * time.Second
		waves = 3
	)
	api := versoritest.NewServer(versoritest.WithLatency(versoritest.Latency{Distribution: versoritest.Constant, Mean: 20 * time.Millisecond}))
	f := newFleet(t, api, redistest.Options{})
	f.start(2, map[string]string{"IMPORT_RATE_LIMIT": fmt.Sprint(rate), "WORKER_CONCURRENCY": "20"})
	file, _ := orgFile(t, n, 0)
	start := time.Now()
	if out, stderr, code := f.cli("", "--connector", connectorID, "--version", "1.0.0", "--orgs", file, "--rollout", "healthy",
		"--waves", "1%,10%,100%", "--bake", bake.String()); code != 0 {
		t.Fatalf("enqueue: exit %d: %s%s", code, out, stderr)
	}
	st := f.waitStatus("healthy", 2*time.Minute, func(s rollout.Status) bool { return s.Done })
	wall := time.Since(start)
	bound := time.Duration(float64(n)/rate*float64(time.Second)) + (waves-1)*bake + waves*2*time.Second
	figure(t, "%d organisations in waves 1%%,10%%,100%%, bake %s, R=%d: %.1f s (bound N/R + bakes + 2 s a wave = %.1f s)", n, bake, rate, wall.Seconds(), bound.Seconds())
	if st.Succeeded != n || st.State != rollout.StateDone || st.Wave != waves {
		t.Fatalf("status %+v", st)
	}
	if wall > bound {
		t.Fatalf("took %s, above %s", wall, bound)
	}
}

// finishTimes returns when each organisation of rollout id finished.
func (f *fleet) finishTimes(id string) []time.Time {
	f.t.Helper()
	var out []time.Time
	if err := f.led.Scan(context.Background(), id, func(r ledger.Record) error {
		if !r.FinishedAt.IsZero() {
			out = append(out, r.FinishedAt)
		}
		return nil
	}); err != nil {
		f.t.Fatal(err)
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// TestFairShareSmallBehindLarge is issue 11's third and fifth figures: a
// 1,500-organisation rollout alone gets the whole rate, and a
// 50-organisation one started 5 s into it (equal weights, R=50, three
// workers) is done within 3 s of its enqueue (26.8 s when rollouts queued
// behind each other).
func TestFairShareSmallBehindLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	const rate = 50
	api := versoritest.NewServer(versoritest.WithLatency(versoritest.Latency{Distribution: versoritest.Constant, Mean: 20 * time.Millisecond}))
	f := newFleet(t, api, redistest.Options{})
	f.start(3, map[string]string{"IMPORT_RATE_LIMIT": fmt.Sprint(rate), "WORKER_CONCURRENCY": "20"})
	bigFile, _ := orgFile(t, 1500, 0)
	smallFile, _ := orgFile(t, 50, 1500)
	if _, stderr, code := f.cli("", "--connector", connectorID, "--version", "1.0.0", "--orgs", bigFile, "--rollout", "big"); code != 0 {
		t.Fatalf("enqueue big: %s", stderr)
	}
	bigAt := time.Now()
	time.Sleep(5 * time.Second)
	cliAt := time.Now()
	if _, stderr, code := f.cli("", "--connector", connectorID, "--version", "1.0.0", "--orgs", smallFile, "--rollout", "small"); code != 0 {
		t.Fatalf("enqueue small: %s", stderr)
	}
	// Timed from the CLI's return: the enqueue's own time is the CLI's
	// (reported beside the figure), not the fair share's to spend.
	smallAt := time.Now()
	var smallTook time.Duration
	for {
		_, c, err := f.led.Rollout(context.Background(), "small")
		if err == nil && c.Done() {
			smallTook = time.Since(smallAt)
			break
		}
		if time.Since(smallAt) > 40*time.Second {
			t.Fatalf("small rollout not done 40 s after its enqueue: %+v", c)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Alone, from its second second to the small one's start.
	alone := countIn(api.CallTimes(), bigAt.Add(time.Second), smallAt)
	aloneRate := float64(alone) / smallAt.Sub(bigAt.Add(time.Second)).Seconds()
	figure(t, "small rollout done %.2f s after its enqueue (target <= 3 s; the CLI took %.2f s before it); the large one alone: %.1f calls/s = %.3f R (target >= 0.97)",
		smallTook.Seconds(), smallAt.Sub(cliAt).Seconds(), aloneRate, aloneRate/rate)
	if smallTook > 3*time.Second {
		t.Errorf("small rollout took %s after its enqueue, above 3 s", smallTook)
	}
	if aloneRate < 0.97*rate {
		t.Errorf("one rollout alone ran at %.1f calls/s, below 0.97 R", aloneRate)
	}
	f.waitDone("big", 2*time.Minute)
}

// TestFairShareWeights is issue 11's fourth figure: two backlogged
// rollouts of weights 3 and 1 share the accepted calls 0.75/0.25, within
// +-10%, in every 10-s window.
func TestFairShareWeights(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	const rate = 50
	api := versoritest.NewServer(versoritest.WithLatency(versoritest.Latency{Distribution: versoritest.Constant, Mean: 20 * time.Millisecond}))
	f := newFleet(t, api, redistest.Options{})
	f.start(3, map[string]string{"IMPORT_RATE_LIMIT": fmt.Sprint(rate), "WORKER_CONCURRENCY": "20"})
	heavyFile, _ := orgFile(t, 1500, 0)
	lightFile, _ := orgFile(t, 1500, 1500)
	start := time.Now()
	for _, r := range []struct{ id, file, weight string }{{"heavy", heavyFile, "3"}, {"light", lightFile, "1"}} {
		if _, stderr, code := f.cli("", "--connector", connectorID, "--version", "1.0.0", "--orgs", r.file, "--rollout", r.id, "--weight", r.weight); code != 0 {
			t.Fatalf("enqueue %s: %s", r.id, stderr)
		}
	}
	// Both are backlogged until the heavy one (1,125 of 1,500 at 37.5/s)
	// has about 30 s of work: three 10-s windows after the first second.
	time.Sleep(33 * time.Second)
	heavy, light := f.finishTimes("heavy"), f.finishTimes("light")
	var shares []string
	worst := 0.0
	for w := range 3 {
		from := start.Add(time.Second + time.Duration(w)*10*time.Second)
		h, l := countIn(heavy, from, from.Add(10*time.Second)), countIn(light, from, from.Add(10*time.Second))
		share := float64(h) / float64(max(1, h+l))
		shares = append(shares, fmt.Sprintf("%.3f (%d:%d)", share, h, l))
		worst = max(worst, abs(share-0.75))
	}
	figure(t, "weights 3:1, R=%d: heavy's share of accepted calls per 10-s window %s (target 0.75 +- 0.075)", rate, strings.Join(shares, ", "))
	if worst > 0.075 {
		t.Errorf("a window's share is %.3f away from 0.75", worst)
	}
	if _, stderr, code := f.cli("", "cancel", "heavy"); code != 0 {
		t.Fatal(stderr)
	}
	if _, stderr, code := f.cli("", "cancel", "light"); code != 0 {
		t.Fatal(stderr)
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// metric reads one series' value from a worker's /metrics ("" labels: the
// bare name).
func metric(t *testing.T, p *e2etest.Process, series string) float64 {
	t.Helper()
	text, err := p.Scrape()
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var x float64
			fmt.Sscan(v, &x)
			return x
		}
	}
	return -1
}

// TestReleaserLeaderKilled: the worker holding the release lease is
// SIGKILLed in the middle of a rollout. Another worker takes the lease
// within one lease (3 s) and releases the rest. (A wave decision waits,
// besides, for the killed worker's held tasks, which asynq's lease recovery
// hands back after 60-115 s: see RELIABILITY.md.)
func TestReleaserLeaderKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	api := versoritest.NewServer(versoritest.WithLatency(versoritest.Latency{Distribution: versoritest.Constant, Mean: 20 * time.Millisecond}))
	f := newFleet(t, api, redistest.Options{})
	f.start(3, map[string]string{"IMPORT_RATE_LIMIT": "100", "WORKER_CONCURRENCY": "10"})
	file, _ := orgFile(t, 1500, 0)
	if _, stderr, code := f.cli("", "--connector", connectorID, "--version", "1.0.0", "--orgs", file, "--rollout", "lead"); code != 0 {
		t.Fatalf("enqueue: %s", stderr)
	}
	time.Sleep(2 * time.Second)
	leader := -1
	for i, w := range f.workers {
		if metric(t, w, "versori_import_releaser_leader") == 1 {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no worker reports holding the release lease")
	}
	killedAt := time.Now()
	f.workers[leader].Kill()
	var took time.Duration
	for took == 0 {
		for i, w := range f.workers {
			if i != leader && metric(t, w, "versori_import_releaser_leader") == 1 {
				took = time.Since(killedAt)
			}
		}
		if time.Since(killedAt) > 15*time.Second {
			t.Fatal("no worker took the release lease within 15 s of the leader's kill")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The rollout runs on: everything is released, and all but the killed
	// worker's held tasks are called.
	st := f.waitStatus("lead", time.Minute, func(s rollout.Status) bool { return s.Released == 1500 && s.Succeeded >= 1500-10 })
	figure(t, "release lease taken over %.2f s after its holder's kill (lease 3 s); %d of 1,500 released, %d succeeded", took.Seconds(), st.Released, st.Succeeded)
	if took > 3*time.Second+time.Second {
		t.Errorf("takeover took %s, above one lease plus a second", took)
	}
	if _, stderr, code := f.cli("", "cancel", "lead"); code != 0 {
		t.Fatal(stderr)
	}
}
