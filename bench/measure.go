package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/versori/import-worker/versori/versoritest"
)

// MaxInWindowFrom is versoritest.WorstWindow's count over the times at or
// after from.
func MaxInWindowFrom(times []time.Time, from time.Time, w time.Duration) int {
	i := sort.Search(len(times), func(i int) bool { return !times[i].Before(from) })
	n, _ := versoritest.WorstWindow(times[i:], w)
	return n
}

// SteadyRate returns the rate, per second, of the sorted times between the
// quantiles lo and hi (e.g. 0.05 and 0.95): the steady part of a run,
// without the start-up (processes warming up, the queue filling) and the
// tail (the last tasks coming back from retries). ok is false when fewer
// than two times fall in between or they span no time.
func SteadyRate(times []time.Time, lo, hi float64) (rate float64, ok bool) {
	if len(times) < 2 || lo < 0 || hi > 1 || lo >= hi {
		return 0, false
	}
	i := int(lo * float64(len(times)-1))
	j := int(hi * float64(len(times)-1))
	span := times[j].Sub(times[i])
	if j <= i || span <= 0 {
		return 0, false
	}
	return float64(j-i) / span.Seconds(), true
}

// FirstReach returns how long after from the trailing window of length w
// first holds at least n of the sorted times, counting only times at or
// after from. When the rate is back to n per w at once, the answer is about
// w*(n-1)/n: that is the floor of this measure. ok is false if it never
// happens.
func FirstReach(times []time.Time, from time.Time, w time.Duration, n int) (time.Duration, bool) {
	if n <= 0 {
		return 0, true
	}
	i := sort.Search(len(times), func(i int) bool { return !times[i].Before(from) })
	times = times[i:]
	lo := 0
	for hi := range times {
		for times[hi].Sub(times[lo]) >= w {
			lo++
		}
		if hi-lo+1 >= n {
			return times[hi].Sub(from), true
		}
	}
	return 0, false
}

// Memory is what /proc/<pid>/status says of a process's resident memory.
type Memory struct {
	// Peak is VmHWM, the peak resident set size, in bytes.
	Peak int64
	// Current is VmRSS, in bytes.
	Current int64
}

// ReadMemory reads /proc/<pid>/status. The process must still be running
// (a reaped process has no status to read; use its rusage instead).
func ReadMemory(pid int) (Memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, fmt.Errorf("read memory of process %d: %w", pid, err)
	}
	defer f.Close()
	m, err := ParseStatus(f)
	if err != nil {
		return m, fmt.Errorf("read memory of process %d: %w", pid, err)
	}
	return m, nil
}

// RunPeak runs cmd and returns its peak RSS in bytes, the last VmHWM read
// from /proc while it ran (every 5 ms; VmHWM only grows). The child's
// rusage maxrss would not do: Go starts a child with vfork, and Linux
// carries the parent's high-water RSS into the child's maxrss, so after
// the benchmark's own process grew to 300 MiB even /bin/true "peaked" at
// 300 MiB (figure 9 once reported the enqueue CLI at 261 MiB so).
func RunPeak(cmd *exec.Cmd) (int64, error) {
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var peak int64
	for {
		if m, err := ReadMemory(cmd.Process.Pid); err == nil {
			peak = max(peak, m.Peak)
		}
		select {
		case err := <-done:
			return peak, err
		case <-tick.C:
		}
	}
}

// ParseStatus parses the VmHWM and VmRSS lines of a /proc/<pid>/status
// file ("VmHWM:	   12345 kB").
func ParseStatus(r io.Reader) (Memory, error) {
	var m Memory
	var seen int
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmHWM" && name != "VmRSS") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return m, fmt.Errorf("unexpected %s line %q", name, sc.Text())
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 {
			return m, fmt.Errorf("unexpected %s line %q", name, sc.Text())
		}
		if name == "VmHWM" {
			m.Peak = kb << 10
		} else {
			m.Current = kb << 10
		}
		seen++
	}
	if err := sc.Err(); err != nil {
		return m, err
	}
	if seen < 2 {
		return m, fmt.Errorf("no VmHWM and VmRSS lines (not Linux?)")
	}
	return m, nil
}

// clockTick is the unit of the CPU times in /proc/<pid>/stat (USER_HZ,
// which Linux fixes at 100 on every architecture Go supports).
const clockTick = 10 * time.Millisecond

// ReadCPU returns the CPU time, user and system, a running process has used
// so far, from /proc/<pid>/stat.
func ReadCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read CPU time of process %d: %w", pid, err)
	}
	d, err := ParseStat(string(b))
	if err != nil {
		return 0, fmt.Errorf("read CPU time of process %d: %w", pid, err)
	}
	return d, nil
}

// ParseStat returns utime + stime of a /proc/<pid>/stat line. The command
// name, in parentheses, may hold spaces and parentheses itself, so the
// fields are counted from the last ')'.
func ParseStat(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("no command name in %q", stat)
	}
	// After the name: state (field 3), ..., utime (14), stime (15).
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(f))
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("bad CPU time %q", v)
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, nil
}

// RedisCPU returns used_cpu_user + used_cpu_sys from the text of INFO cpu:
// the CPU time the server has used since it started.
func RedisCPU(info string) (time.Duration, bool) {
	var total float64
	seen := 0
	for _, line := range strings.Split(info, "\n") {
		name, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || (name != "used_cpu_user" && name != "used_cpu_sys") {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, false
		}
		total += f
		seen++
	}
	return time.Duration(total * float64(time.Second)), seen == 2
}

// CommandCounts is INFO commandstats: calls per command name.
type CommandCounts map[string]int64

// Total is the number of calls of every command but those in skip (the
// benchmark's own INFO and CONFIG calls, for example).
func (c CommandCounts) Total(skip ...string) int64 {
	var n int64
	for name, calls := range c {
		if !containsFold(skip, name) {
			n += calls
		}
	}
	return n
}

// Top returns the n most called commands as "name=calls/per" with calls
// divided by per (e.g. per organisation), most called first.
func (c CommandCounts) Top(n int, per float64, skip ...string) string {
	type kv struct {
		name  string
		calls int64
	}
	var all []kv
	for name, calls := range c {
		if !containsFold(skip, name) {
			all = append(all, kv{name, calls})
		}
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].calls != all[j].calls {
			return all[i].calls > all[j].calls
		}
		return all[i].name < all[j].name
	})
	var parts []string
	for i, e := range all {
		if i == n {
			break
		}
		parts = append(parts, fmt.Sprintf("%s=%.2f", e.name, float64(e.calls)/per))
	}
	return strings.Join(parts, " ")
}

func containsFold(list []string, s string) bool {
	for _, e := range list {
		if strings.EqualFold(e, s) {
			return true
		}
	}
	return false
}

func fmtFloat(f float64, prec int) string { return strconv.FormatFloat(f, 'f', prec, 64) }

// ParseBenchmark finds the result line of the named Go benchmark in the
// output of `go test -bench` and returns its metrics by unit, e.g.
// {"ns/op": 1.2e10, "speedup": 3.4}: the values b.ReportMetric reported.
func ParseBenchmark(output, name string) (map[string]float64, error) {
	for _, line := range strings.Split(output, "\n") {
		f := strings.Fields(line)
		// "BenchmarkX-2  1  123 ns/op  4.5 unit ..."; the -N suffix is GOMAXPROCS.
		if len(f) < 4 || len(f)%2 != 0 {
			continue
		}
		if base, _, _ := strings.Cut(f[0], "-"); base != name {
			continue
		}
		out := map[string]float64{}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("benchmark %s: value %q of %s: %w", name, f[i], f[i+1], err)
			}
			out[f[i+1]] = v
		}
		return out, nil
	}
	return nil, fmt.Errorf("no result line for benchmark %s", name)
}

// MetricSumWhere sums the samples of the metric name, in a Prometheus text
// exposition, whose label has the given value, e.g. the "opened" series
// of versori_import_breaker_transitions_total{event="opened"}. found is
// false when no such sample is there (a counter never incremented is not
// exported by a labelled vector).
func MetricSumWhere(exposition, name, label, value string) (sum float64, found bool) {
	for _, line := range strings.Split(exposition, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		series, rest, ok := strings.Cut(line, "{")
		if !ok || series != name {
			continue
		}
		labels, sample, ok := cutLabels(rest)
		if !ok || labels[label] != value {
			continue
		}
		f := strings.Fields(sample)
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			sum += v
			found = true
		}
	}
	return sum, found
}

// cutLabels parses `a="x",b="y\"z"} 12` into the labels and what follows
// the closing brace.
func cutLabels(s string) (map[string]string, string, bool) {
	labels := map[string]string{}
	for {
		s = strings.TrimLeft(s, " ,")
		if strings.HasPrefix(s, "}") {
			return labels, s[1:], true
		}
		name, rest, ok := strings.Cut(s, "=")
		if !ok || !strings.HasPrefix(rest, `"`) {
			return nil, "", false
		}
		var v strings.Builder
		i := 1
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] == '\\' && i+1 < len(rest) {
				i++
				switch rest[i] {
				case 'n':
					v.WriteByte('\n')
				default:
					v.WriteByte(rest[i])
				}
				continue
			}
			v.WriteByte(rest[i])
		}
		if i >= len(rest) {
			return nil, "", false
		}
		labels[strings.TrimSpace(name)] = v.String()
		s = rest[i+1:]
	}
}

// BudgetEvent is one decision of the fleet's rate budget as a worker logged
// it: a change of the adaptive rate ("cut", "probe_failed", "headers") or a
// transition of the circuit breaker ("breaker opened", "breaker closed",
// ...).
type BudgetEvent struct {
	At    time.Time
	Event string
	// Rate is the fleet's new rate, for a rate change.
	Rate float64
}

// BudgetEvents reads the decisions of the rate budget from a worker's JSON
// log (one object a line; other lines are skipped).
func BudgetEvents(log string) []BudgetEvent {
	var out []BudgetEvent
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, `"fleet rate changed"`) && !strings.Contains(line, `"circuit breaker `) {
			continue
		}
		var rec struct {
			Time  time.Time `json:"time"`
			Msg   string    `json:"msg"`
			Event string    `json:"event"`
			Rate  float64   `json:"rate"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			continue
		}
		switch {
		case rec.Msg == "fleet rate changed":
			out = append(out, BudgetEvent{At: rec.Time, Event: rec.Event, Rate: rec.Rate})
		case strings.HasPrefix(rec.Msg, "circuit breaker "):
			what, _, _ := strings.Cut(strings.TrimPrefix(rec.Msg, "circuit breaker "), ":")
			out = append(out, BudgetEvent{At: rec.Time, Event: "breaker " + what})
		}
	}
	return out
}

// FormatEvents writes events as "cut 9.5 @2.1s" from start, at most max
// of them (and how many more).
func FormatEvents(events []BudgetEvent, start time.Time, max int) string {
	sort.SliceStable(events, func(i, j int) bool { return events[i].At.Before(events[j].At) })
	var parts []string
	for i, e := range events {
		if i == max {
			parts = append(parts, fmt.Sprintf("... %d more", len(events)-max))
			break
		}
		s := e.Event
		if e.Rate > 0 {
			s += " " + fmtFloat(e.Rate, 2)
		}
		parts = append(parts, s+" @"+fmtFloat(e.At.Sub(start).Seconds(), 1)+"s")
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// CountIn returns how many of the sorted times fall in [from, to).
func CountIn(times []time.Time, from, to time.Time) int {
	i := sort.Search(len(times), func(i int) bool { return !times[i].Before(from) })
	j := sort.Search(len(times), func(i int) bool { return !times[i].Before(to) })
	return j - i
}
