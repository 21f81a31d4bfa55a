package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"

	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/versori"
)

// BenchmarkEnqueue100k measures the figures the issue asks for, in one run
// on one Redis so they compare: enqueueing 100,000 organisations with the
// built CLI against asynq's Client.Enqueue one task at a time; the CLI's
// peak memory (the child's VmHWM, polled while it runs); and the time status and a full
// CSV report take on that 100,000-organisation rollout. It runs only with
// -bench (it takes about a minute):
//
//	go test ./cmd/enqueue -run '^$' -bench Enqueue100k -benchtime 1x
func BenchmarkEnqueue100k(b *testing.B) {
	const n = 100_000
	bin := binaryB(b)
	s := redistest.Start(b, redistest.Options{})
	ctx := context.Background()
	var list bytes.Buffer
	orgs := make([]string, n)
	for i := range orgs {
		orgs[i] = ulid.Make().String()
		list.WriteString(orgs[i] + "\n")
	}
	file := filepath.Join(b.TempDir(), "orgs.txt")
	if err := os.WriteFile(file, list.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
	env := []string{"REDIS_URL=" + s.URL()}

	for i := 0; i < b.N; i++ {
		b.ResetTimer()
		// The machine is shared and noisy: alternate the two, three rounds
		// each, and compare medians.
		var baselines, clis []time.Duration
		var peak int64
		for round := range 3 {
			s.Client().FlushAll(ctx)
			// The baseline: asynq's client, one task at a time, same tasks.
			client := asynq.NewClientFromRedisClient(s.Client())
			start := time.Now()
			for _, org := range orgs {
				t, err := tasks.NewImportTask(tasks.Payload{RolloutID: "baseline", OrgID: versori.OrgID(org), ConnectorID: testConnector, Version: "1.4.0"}, tasks.TaskOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := client.EnqueueContext(ctx, t); err != nil {
					b.Fatal(err)
				}
			}
			baselines = append(baselines, time.Since(start))

			// The CLI, as an operator runs it.
			s.Client().FlushAll(ctx)
			start = time.Now()
			r, p := runMeasured(b, bin, env, "--connector", testConnector, "--version", "1.4.0", "--orgs", file, "--rollout", "cli", "--json")
			clis = append(clis, time.Since(start))
			peak = max(peak, p)
			var res enqueueResult
			if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.Enqueued != n {
				b.Fatalf("CLI: %v %+v\n%s", err, res, r.stderr)
			}
			b.Logf("round %d: Client.Enqueue %.1fs, CLI %.1fs", round+1, baselines[round].Seconds(), clis[round].Seconds())
		}
		baseline, cli := median(baselines), median(clis)

		// status reads counters: its cost must not grow with the rollout.
		start := time.Now()
		r, _ := runMeasured(b, bin, env, "status", "cli", "--json")
		statusTook := time.Since(start)
		var st statusResult
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Total != n {
			b.Fatalf("status: %v %+v\n%s", err, st, r.stderr)
		}
		led := ledger.New(s.Client(), ledger.Options{})
		start = time.Now()
		const reads = 100
		for range reads {
			if _, _, err := led.Rollout(ctx, "cli"); err != nil {
				b.Fatal(err)
			}
		}
		statusRead := time.Since(start) / reads

		// The report streams 100,000 rows.
		out := filepath.Join(b.TempDir(), "report.csv")
		start = time.Now()
		_, reportPeak := runMeasured(b, bin, env, "report", "cli", "--format", "csv", "--output", out)
		reportTook := time.Since(start)

		b.StopTimer()
		speedup := baseline.Seconds() / cli.Seconds()
		b.ReportMetric(n/cli.Seconds(), "cli-orgs/s")
		b.ReportMetric(n/baseline.Seconds(), "asynq-orgs/s")
		b.ReportMetric(speedup, "speedup")
		b.ReportMetric(float64(peak)/(1<<20), "cli-peak-MiB")
		b.ReportMetric(statusTook.Seconds()*1000, "status-cmd-ms")
		b.ReportMetric(float64(statusRead.Microseconds()), "status-read-µs")
		b.ReportMetric(reportTook.Seconds(), "report-s")
		b.ReportMetric(float64(reportPeak)/(1<<20), "report-peak-MiB")
		b.Logf("FIGURE enqueue 100k (medians of 3): CLI %.1fs (%.0f/s), Client.Enqueue one at a time %.1fs (%.0f/s): %.2fx; CLI peak RSS %.1f MiB; "+
			"status command %s (counter read %s); CSV report %.1fs, peak RSS %.1f MiB",
			cli.Seconds(), n/cli.Seconds(), baseline.Seconds(), n/baseline.Seconds(), speedup, float64(peak)/(1<<20),
			statusTook.Round(time.Millisecond), statusRead.Round(time.Microsecond), reportTook.Seconds(), float64(reportPeak)/(1<<20))
	}
}

// BenchmarkEnqueueMillionLines measures the CLI's peak memory on a list of
// 1,000,000 lines in a dry run: the de-duplication set is all that grows.
//
//	go test ./cmd/enqueue -run '^$' -bench MillionLines -benchtime 1x
func BenchmarkEnqueueMillionLines(b *testing.B) {
	const n = 1_000_000
	bin := binaryB(b)
	f, err := os.Create(filepath.Join(b.TempDir(), "orgs.txt"))
	if err != nil {
		b.Fatal(err)
	}
	for range n {
		fmt.Fprintln(f, ulid.Make().String())
	}
	f.Close()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		r, peak := runMeasured(b, bin, nil, "--connector", testConnector, "--version", "1.4.0", "--orgs", f.Name(), "--dry-run", "--json")
		var res enqueueResult
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.Organisations != n {
			b.Fatalf("%v %+v\n%s", err, res, r.stderr)
		}
		b.ReportMetric(float64(peak)/(1<<20), "peak-MiB")
		b.Logf("FIGURE 1,000,000-line dry run: %.1fs, peak RSS %.1f MiB", time.Since(start).Seconds(), float64(peak)/(1<<20))
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func binaryB(b *testing.B) string {
	dir := b.TempDir()
	bin := filepath.Join(dir, "enqueue")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// runMeasured runs the binary and returns its output and peak RSS in bytes:
// the last VmHWM read from /proc while it ran. rusage's maxrss of a child
// started by a large parent is no good here: it counts the parent's pages
// the child shares between fork and exec.
func runMeasured(b *testing.B, bin string, env []string, args ...string) (result, int64) {
	b.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	var peak int64
	done := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
		for {
			if hwm := vmHWM(status); hwm > peak {
				peak = hwm
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	<-polled
	if err != nil {
		b.Fatalf("enqueue %v: %v\n%s", args, err, errOut.String())
	}
	return result{stdout: out.String(), stderr: errOut.String()}, peak
}

// vmHWM returns the VmHWM line of a /proc status file in bytes, or 0.
func vmHWM(path string) int64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
