package bench

import (
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/versori/import-worker/versori/versoritest"
)

var epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// at returns times at the given milliseconds after epoch.
func at(ms ...int) []time.Time {
	out := make([]time.Time, len(ms))
	for i, m := range ms {
		out[i] = epoch.Add(time.Duration(m) * time.Millisecond)
	}
	return out
}

// every returns n times spaced by d, starting at start.
func every(start time.Time, n int, d time.Duration) []time.Time {
	out := make([]time.Time, n)
	for i := range out {
		out[i] = start.Add(time.Duration(i) * d)
	}
	return out
}

func TestMaxInWindow(t *testing.T) {
	for _, tc := range []struct {
		name  string
		times []time.Time
		want  int
	}{
		{"empty", nil, 0},
		{"one", at(5), 1},
		{"window is half-open", at(0, 1000), 1},
		{"just inside", at(0, 999), 2},
		{"burst straddling a second boundary counts whole", at(100, 900, 950, 1050, 1099, 1900, 2500), 5},
		{"steady 10 per second", every(epoch, 100, 100*time.Millisecond), 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := versoritest.WorstWindow(tc.times, time.Second); got != tc.want {
				t.Errorf("WorstWindow = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestWorstWindow(t *testing.T) {
	n, start := versoritest.WorstWindow(at(0, 2000, 2100, 2200, 2300, 5000), time.Second)
	if n != 4 || !start.Equal(epoch.Add(2*time.Second)) {
		t.Errorf("WorstWindow = %d at %s, want 4 at 2s", n, start.Sub(epoch))
	}
	if n, start := versoritest.WorstWindow(nil, time.Second); n != 0 || !start.IsZero() {
		t.Errorf("WorstWindow(nil) = %d, %s", n, start)
	}
}

func TestMaxInWindowFrom(t *testing.T) {
	times := at(0, 10, 20, 30, 2000, 2500)
	if got := MaxInWindowFrom(times, epoch.Add(time.Second), time.Second); got != 2 {
		t.Errorf("from 1 s = %d, want 2 (the burst before is left out)", got)
	}
	if got := MaxInWindowFrom(times, epoch.Add(time.Hour), time.Second); got != 0 {
		t.Errorf("from after the last = %d, want 0", got)
	}
}

func TestSteadyRate(t *testing.T) {
	// 100 per second for 10 s, with a slow start and a long tail that the
	// quantiles must leave out.
	times := at(-5000, -4000)
	times = append(times, every(epoch, 1000, 10*time.Millisecond)...)
	times = append(times, at(20000, 30000)...)
	got, ok := SteadyRate(times, 0.05, 0.95)
	if !ok || got < 99 || got > 101 {
		t.Errorf("SteadyRate = %.2f, %v; want about 100", got, ok)
	}
	if _, ok := SteadyRate(at(1), 0, 1); ok {
		t.Error("one time: ok, want not ok")
	}
	if _, ok := SteadyRate(at(1, 1, 1), 0, 1); ok {
		t.Error("no span: ok, want not ok")
	}
	if _, ok := SteadyRate(times, 0.9, 0.1); ok {
		t.Error("lo >= hi: ok, want not ok")
	}
}

func TestFirstReach(t *testing.T) {
	recovery := epoch.Add(10 * time.Second)
	// Before recovery a burst that must not count; after it nothing for
	// 2 s, then 100 per second.
	times := every(recovery.Add(-500*time.Millisecond), 200, time.Millisecond)
	times = append(times, every(recovery.Add(2*time.Second), 300, 10*time.Millisecond)...)
	got, ok := FirstReach(times, recovery, time.Second, 90)
	want := 2*time.Second + 890*time.Millisecond
	if !ok || got != want {
		t.Errorf("FirstReach = %s, %v; want %s", got, ok, want)
	}
	if _, ok := FirstReach(times, recovery, time.Second, 101); ok {
		t.Error("101 in a window of a 100-per-second stream: ok, want not ok")
	}
	if d, ok := FirstReach(nil, recovery, time.Second, 0); !ok || d != 0 {
		t.Errorf("n = 0: %s, %v; want 0, true", d, ok)
	}
}

func TestParseStatus(t *testing.T) {
	const status = "Name:\tworker\nVmPeak:\t 1300000 kB\nVmHWM:\t   30720 kB\nVmRSS:\t   20480 kB\nThreads:\t7\n"
	m, err := ParseStatus(strings.NewReader(status))
	if err != nil {
		t.Fatal(err)
	}
	if m.Peak != 30<<20 || m.Current != 20<<20 {
		t.Errorf("ParseStatus = %+v, want 30 MiB peak, 20 MiB current", m)
	}
	for _, bad := range []string{
		"Name:\tx\n",
		"VmHWM:\t12 MB\nVmRSS:\t1 kB\n",
		"VmHWM:\tmany kB\nVmRSS:\t1 kB\n",
		"VmHWM:\t-1 kB\nVmRSS:\t1 kB\n",
	} {
		if _, err := ParseStatus(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseStatus(%q): no error", bad)
		}
	}
}

func TestReadMemoryOfThisProcess(t *testing.T) {
	m, err := ReadMemory(pid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if m.Peak < m.Current || m.Current <= 0 {
		t.Errorf("ReadMemory = %+v: want 0 < current <= peak", m)
	}
	if _, err := ReadMemory(-1); err == nil {
		t.Error("ReadMemory(-1): no error")
	}
}

func TestCommandCounts(t *testing.T) {
	c := CommandCounts{"evalsha": 300, "hget": 100, "info": 5, "config|resetstat": 1, "zadd": 100}
	if got := c.Total("info", "CONFIG|RESETSTAT"); got != 500 {
		t.Errorf("Total = %d, want 500", got)
	}
	if got := c.Top(2, 100, "info"); got != "evalsha=3.00 hget=1.00" {
		t.Errorf("Top = %q", got)
	}
}

func TestSummarise(t *testing.T) {
	var late []time.Duration
	for i := range 100 {
		late = append(late, time.Duration(i)*time.Millisecond)
	}
	l := Summarise(late)
	if l.Samples != 100 || l.P50 != 49*time.Millisecond || l.P99 != 98*time.Millisecond || l.Max != 99*time.Millisecond {
		t.Errorf("Summarise = %+v", l)
	}
	if l.Over20ms != 0.79 {
		t.Errorf("Over20ms = %v, want 0.79", l.Over20ms)
	}
	if !strings.Contains(l.String(), "79.00% over 20 ms") {
		t.Errorf("String = %q", l.String())
	}
	if (Summarise(nil) != Lateness{}) {
		t.Error("Summarise(nil) is not zero")
	}
}

func TestProbe(t *testing.T) {
	p := StartProbe(time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	l := p.Stop()
	if l.Samples < 5 {
		t.Errorf("%d samples in 50 ms of 1 ms sleeps", l.Samples)
	}
	if l.P50 > l.P99 || l.P99 > l.Max {
		t.Errorf("quantiles out of order: %+v", l)
	}
}

func TestParseStat(t *testing.T) {
	// A command name with a space and a parenthesis, as a process may set.
	const stat = "4242 (my (worker) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 100 0 0\n"
	d, err := ParseStat(stat)
	if err != nil {
		t.Fatal(err)
	}
	if d != 3250*time.Millisecond {
		t.Errorf("ParseStat = %s, want 3.25s (250 + 75 ticks)", d)
	}
	for _, bad := range []string{"", "4242 (x S 1", "4242 (x) S 1 2 3", "4242 (x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 ten 75 0"} {
		if _, err := ParseStat(bad); err == nil {
			t.Errorf("ParseStat(%q): no error", bad)
		}
	}
}

func TestReadCPUOfThisProcess(t *testing.T) {
	start, err := ReadCPU(pid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if now, _ := ReadCPU(pid()); now > start {
			return
		}
	}
	t.Error("CPU time did not grow in 2 s of spinning")
}

func TestRedisCPU(t *testing.T) {
	const info = "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.250000\r\nused_cpu_sys_children:9.0\r\n"
	d, ok := RedisCPU(info)
	if !ok || d != 3750*time.Millisecond {
		t.Errorf("RedisCPU = %s, %v; want 3.75s", d, ok)
	}
	if _, ok := RedisCPU("used_cpu_sys:1\r\n"); ok {
		t.Error("RedisCPU without used_cpu_user: ok")
	}
}

func TestParseBenchmark(t *testing.T) {
	const out = `goos: linux
goarch: amd64
pkg: github.com/versori/import-worker/cmd/enqueue
cpu: AMD EPYC
BenchmarkEnqueue100kOther-2   	       1	5 ns/op
BenchmarkEnqueue100k-2   	       1	13456789012 ns/op	     9917 asynq-orgs/s	     33932 cli-orgs/s	        78.12 cli-peak-MiB	         3.420 speedup
--- BENCH: BenchmarkEnqueue100k-2
    bench_test.go:118: FIGURE enqueue 100k: ...
PASS
`
	m, err := ParseBenchmark(out, "BenchmarkEnqueue100k")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"ns/op": 13456789012, "asynq-orgs/s": 9917, "cli-orgs/s": 33932, "cli-peak-MiB": 78.12, "speedup": 3.42}
	if len(m) != len(want) {
		t.Errorf("ParseBenchmark = %v, want %v", m, want)
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	if _, err := ParseBenchmark(out, "BenchmarkMissing"); err == nil {
		t.Error("missing benchmark: no error")
	}
	if _, err := ParseBenchmark("BenchmarkEnqueue100k-2 1 x ns/op\n", "BenchmarkEnqueue100k"); err == nil {
		t.Error("bad value: no error")
	}
}

func TestMetricSumWhere(t *testing.T) {
	text := `# HELP versori_import_breaker_transitions_total Transitions.
# TYPE versori_import_breaker_transitions_total counter
versori_import_breaker_transitions_total{event="opened"} 2
versori_import_breaker_transitions_total{event="closed"} 1
versori_import_breaker_transitions_total{event="opened",other="a\"b,c}"} 3
versori_import_breaker_transitions_total_other{event="opened"} 100
versori_import_breaker_transitions_total 7
versori_import_retries_scheduled_total{class="server_error"} 1.5e+01
`
	for _, tc := range []struct {
		name, label, value string
		want               float64
		found              bool
	}{
		{"versori_import_breaker_transitions_total", "event", "opened", 5, true},
		{"versori_import_breaker_transitions_total", "event", "closed", 1, true},
		{"versori_import_breaker_transitions_total", "event", "reopened", 0, false},
		{"versori_import_breaker_transitions_total", "other", `a"b,c}`, 3, true},
		{"versori_import_retries_scheduled_total", "class", "server_error", 15, true},
		{"versori_import_missing_total", "class", "server_error", 0, false},
	} {
		got, found := MetricSumWhere(text, tc.name, tc.label, tc.value)
		if got != tc.want || found != tc.found {
			t.Errorf("MetricSumWhere(%s, %s=%q) = %v, %v; want %v, %v", tc.name, tc.label, tc.value, got, found, tc.want, tc.found)
		}
	}
}

func TestBudgetEvents(t *testing.T) {
	log := `{"time":"2025-01-01T00:00:01.5Z","level":"INFO","msg":"fleet rate changed","event":"cut","rate":9.5}
{"time":"2025-01-01T00:00:02Z","level":"INFO","msg":"organisation imported","org_id":"x"}
not json, "fleet rate changed"
{"time":"2025-01-01T00:00:03Z","level":"WARN","msg":"circuit breaker opened: the API fails broadly, holding every worker's calls","state":"open"}
{"time":"2025-01-01T00:00:06.25Z","level":"INFO","msg":"circuit breaker closed","state":"closed"}
`
	ev := BudgetEvents(log)
	if len(ev) != 3 || ev[0].Event != "cut" || ev[0].Rate != 9.5 || ev[1].Event != "breaker opened" || ev[2].Event != "breaker closed" {
		t.Fatalf("BudgetEvents = %+v", ev)
	}
	if got, want := FormatEvents(ev, epoch, 2), "cut 9.50 @1.5s, breaker opened @3.0s, ... 1 more"; got != want {
		t.Errorf("FormatEvents = %q, want %q", got, want)
	}
	if got := FormatEvents(nil, epoch, 5); got != "none" {
		t.Errorf("FormatEvents(nil) = %q", got)
	}
}

func TestCountIn(t *testing.T) {
	times := at(0, 100, 200, 200, 999, 1000, 1500)
	if got := CountIn(times, epoch.Add(100*time.Millisecond), epoch.Add(time.Second)); got != 4 {
		t.Errorf("CountIn = %d, want 4", got)
	}
	if got := CountIn(nil, epoch, epoch.Add(time.Second)); got != 0 {
		t.Errorf("CountIn(nil) = %d", got)
	}
}

// RunPeak reads the child's own peak, not this process's: a test process
// that grew first must not make a small child look big (rusage maxrss
// does, through vfork).
func TestRunPeakIsTheChilds(t *testing.T) {
	big := make([]byte, 200<<20)
	for i := range big {
		big[i] = 1
	}
	peak, err := RunPeak(exec.Command("sleep", "0.1"))
	runtime.KeepAlive(big)
	if err != nil {
		t.Fatal(err)
	}
	if peak <= 0 || peak > 50<<20 {
		t.Fatalf("sleep's peak RSS read as %d B; want its own few MiB, not this process's 200 MiB", peak)
	}
}
