package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/internal/worker"
	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/versori"
	"github.com/versori/import-worker/versori/versoritest"
)

// The end-to-end tests build the real binary and drive it as an operator
// (or the acceptance suite) would, against a real redis-server and a real
// worker serving the versoritest fake.

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binary builds cmd/enqueue once per test run.
func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "enqueue-e2e-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "enqueue")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// env is one end-to-end set-up: a Redis, the fake API and a worker.
type env struct {
	t     *testing.T
	bin   string
	redis *redistest.Server
	api   *versoritest.Server
}

func newEnv(t *testing.T, startWorker bool) *env {
	t.Helper()
	e := &env{t: t, bin: binary(t), redis: redistest.Start(t, redistest.Options{})}
	e.api = versoritest.NewServer(versoritest.WithLatency(versoritest.Latency{Mean: 2 * time.Millisecond}))
	t.Cleanup(e.api.Close)
	if startWorker {
		e.startWorker()
	}
	return e
}

func (e *env) startWorker() {
	t := e.t
	client, err := versori.New(e.api.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	rdb := e.redis.Client()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- worker.Run(ctx, worker.Config{
			Redis:       rdb,
			Client:      client,
			Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
			Concurrency: 10,
			RateLimit:   500,
			Backoff:     tasks.Backoff{Base: 20 * time.Millisecond, Cap: 100 * time.Millisecond},
			Ready:       ready,
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("worker stopped at start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
}

// run runs the binary with REDIS_URL set and returns its exit status and
// output.
func (e *env) run(stdin string, args ...string) result {
	e.t.Helper()
	return runBinary(e.t, e.bin, []string{"REDIS_URL=" + e.redis.URL()}, stdin, args...)
}

func runBinary(t *testing.T, bin string, env []string, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %v: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("enqueue %v did not finish within 2 minutes", args)
	}
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

// jsonOf runs a command that must succeed and decodes its JSON output.
func (e *env) jsonOf(v any, args ...string) {
	e.t.Helper()
	r := e.run("", append(args, "--json")...)
	if r.code != 0 {
		e.t.Fatalf("enqueue %v: exit %d\nstderr:\n%s", args, r.code, r.stderr)
	}
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		e.t.Fatalf("enqueue %v: output is not JSON: %v\n%s", args, err, r.stdout)
	}
}

func makeOrgs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = ulid.Make().String()
	}
	return out
}

// contractKeys checks that a JSON object has exactly the contract's keys
// (and possibly more) with values of the right kind.
func contractKeys(t *testing.T, raw string, keys map[string]string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatalf("not a JSON object: %v\n%s", err, raw)
	}
	for k, kind := range keys {
		v, ok := m[k]
		if !ok {
			t.Errorf("key %q missing from %s", k, raw)
			continue
		}
		var good bool
		switch kind {
		case "string":
			_, good = v.(string)
		case "number":
			_, good = v.(float64)
		case "bool":
			_, good = v.(bool)
		}
		if !good {
			t.Errorf("key %q = %v (%T), want a %s", k, v, v, kind)
		}
	}
	return m
}

func TestE2ERollout(t *testing.T) {
	e := newEnv(t, true)
	orgs := makeOrgs(40)
	missing := orgs[:3] // the API answers 404 for these until told otherwise
	for _, o := range missing {
		e.api.SetFault(o, versoritest.Fault{Kind: versoritest.FaultNotFound})
	}
	// A plain list with a comment, a blank line and two duplicates.
	list := writeFile(t, "orgs.txt", "# rollout\n\n"+strings.Join(orgs, "\n")+"\n"+orgs[5]+"\n"+strings.ToLower(orgs[6])+"\n")

	r := e.run("", enqueueArgs(list, "--rollout", "r1", "--json")...)
	if r.code != 0 {
		t.Fatalf("enqueue: exit %d\n%s", r.code, r.stderr)
	}
	m := contractKeys(t, r.stdout, map[string]string{"rollout_id": "string", "enqueued": "number", "already_enqueued": "number", "duplicates": "number", "invalid": "number"})
	if m["rollout_id"] != "r1" || m["enqueued"] != 40.0 || m["already_enqueued"] != 0.0 || m["duplicates"] != 2.0 || m["invalid"] != 0.0 {
		t.Errorf("enqueue output %s", r.stdout)
	}

	statusKeys := map[string]string{"rollout_id": "string", "total": "number", "pending": "number", "succeeded": "number", "failed": "number", "done": "bool"}
	r = e.run("", "status", "r1", "--watch", "--json", "--interval", "50ms", "--timeout", "90s")
	if r.code != 0 {
		t.Fatalf("status --watch: exit %d\n%s", r.code, r.stderr)
	}
	m = contractKeys(t, r.stdout, statusKeys)
	if m["done"] != true || m["total"] != 40.0 || m["succeeded"] != 37.0 || m["failed"] != 3.0 || m["pending"] != 0.0 {
		t.Fatalf("final status %s", r.stdout)
	}
	if bc, _ := m["by_class"].(map[string]any); bc["imported"] != 37.0 || bc["not_found"] != 3.0 {
		t.Errorf("by_class = %v", m["by_class"])
	}

	// The human status names the failures and the way out.
	r = e.run("", "status", "r1")
	for _, want := range []string{"succeeded", "37", "not_found 3", "state      done", "enqueue retry r1"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, r.stdout)
		}
	}

	// CSV report: a header with the contract's columns first, one row per
	// organisation.
	out := filepath.Join(t.TempDir(), "report.csv")
	r = e.run("", "report", "r1", "--format", "csv", "--output", out)
	if r.code != 0 {
		t.Fatalf("report: exit %d\n%s", r.code, r.stderr)
	}
	rows := readCSV(t, out)
	if got := strings.Join(rows[0][:7], ","); got != "org_id,state,class,http_status,attempts,error,version" {
		t.Errorf("header %q", got)
	}
	if len(rows) != 41 {
		t.Fatalf("%d rows, want a header and 40", len(rows))
	}
	seen := map[string]bool{}
	for _, row := range rows[1:] {
		seen[row[0]] = true
		want := "succeeded,imported,200,1"
		if contains(missing, row[0]) {
			want = "failed,not_found,404,1"
		}
		if got := strings.Join(row[1:5], ","); got != want {
			t.Errorf("row %v: want %s", row, want)
		}
		if row[1] == "succeeded" && row[6] != "1.4.0" {
			t.Errorf("row %v: version %q", row, row[6])
		}
	}
	if len(seen) != 40 {
		t.Errorf("%d distinct organisations in the report", len(seen))
	}

	// JSON report of the failures only.
	r = e.run("", "report", "r1", "--format", "json", "--state", "failed")
	var failed []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &failed); err != nil || r.code != 0 {
		t.Fatalf("json report: exit %d, %v\n%s", r.code, err, r.stdout)
	}
	if len(failed) != 3 {
		t.Fatalf("%d failed rows, want 3", len(failed))
	}
	for _, row := range failed {
		for _, k := range []string{"org_id", "state", "class", "http_status", "attempts", "error", "version"} {
			if _, ok := row[k]; !ok {
				t.Errorf("row lacks %q: %v", k, row)
			}
		}
		if row["class"] != "not_found" || row["http_status"] != 404.0 || row["error"] == "" {
			t.Errorf("failed row %v", row)
		}
	}

	// Re-running the same command enqueues nothing.
	r = e.run("", enqueueArgs(list, "--rollout", "r1", "--json")...)
	m = contractKeys(t, r.stdout, nil)
	if r.code != 0 || m["enqueued"] != 0.0 || m["already_enqueued"] != 40.0 {
		t.Errorf("re-run: exit %d, %s", r.code, r.stdout)
	}
	// The same ID for another version is refused.
	r = e.run("", "--connector", testConnector, "--version", "2.0.0", "--orgs", list, "--rollout", "r1")
	if r.code != 2 || !strings.Contains(r.stderr, "already exists for another connector or version") {
		t.Errorf("reused rollout ID: exit %d\n%s", r.code, r.stderr)
	}

	// The API finds them now: retry the not_found ones, and only them.
	callsBefore := e.api.TotalCalls()
	for _, o := range missing {
		e.api.SetFault(o, versoritest.Fault{})
	}
	var rr retryResult
	e.jsonOf(&rr, "retry", "r1", "--class", "server_error")
	if rr.Requeued != 0 {
		t.Errorf("retry of another class requeued %d", rr.Requeued)
	}
	e.jsonOf(&rr, "retry", "r1", "--class", "not_found,exhausted")
	if rr.Requeued != 3 || rr.Enqueued != 3 {
		t.Errorf("retry: %+v", rr)
	}
	var st statusResult
	e.jsonOf(&st, "status", "r1", "--watch", "--interval", "50ms", "--timeout", "90s")
	if !st.Done || st.Succeeded != 40 || st.Failed != 0 {
		t.Errorf("after retry: %+v", st)
	}
	if calls := e.api.TotalCalls() - callsBefore; calls != 3 {
		t.Errorf("the retry made %d API calls, want 3: succeeded organisations must not be called again", calls)
	}
	e.jsonOf(&rr, "retry", "r1")
	if rr.Requeued != 0 {
		t.Errorf("second retry requeued %d", rr.Requeued)
	}

	// The list on standard input, as CSV, into a generated rollout.
	more := makeOrgs(5)
	csvList := "name,organisation_id\n"
	for i, o := range more {
		csvList += fmt.Sprintf("\"Org, %d\",%s\n", i, o)
	}
	r = e.run(csvList, "--connector", testConnector, "--version", "latest", "--orgs", "-")
	if r.code != 0 {
		t.Fatalf("enqueue from stdin: exit %d\n%s", r.code, r.stderr)
	}
	generated := strings.TrimSpace(r.stdout)
	if err := tasks.ValidateRolloutID(generated); err != nil || generated == "r1" {
		t.Fatalf("stdout %q is not a new rollout ID", r.stdout)
	}
	e.jsonOf(&st, "status", generated, "--watch", "--interval", "50ms", "--timeout", "90s")
	if st.Succeeded != 5 {
		t.Errorf("generated rollout: %+v", st)
	}

	var list2 []rolloutRow
	e.jsonOf(&list2, "rollouts")
	if len(list2) != 2 || list2[0].RolloutID != generated || list2[1].RolloutID != "r1" || list2[1].Succeeded != 40 {
		t.Errorf("rollouts: %+v", list2)
	}
	r = e.run("", "rollouts")
	if !strings.Contains(r.stdout, "ROLLOUT") || !strings.Contains(r.stdout, "r1") {
		t.Errorf("rollouts table:\n%s", r.stdout)
	}
}

func TestE2EPauseCancelResume(t *testing.T) {
	e := newEnv(t, true)
	var pr pauseResult
	e.jsonOf(&pr, "pause")
	if !pr.Paused || !pr.Changed || pr.Queue != "imports" {
		t.Errorf("pause: %+v", pr)
	}
	e.jsonOf(&pr, "pause")
	if pr.Changed {
		t.Errorf("second pause changed something: %+v", pr)
	}

	orgs := makeOrgs(30)
	list := writeFile(t, "orgs.txt", strings.Join(orgs, "\n"))
	r := e.run("", enqueueArgs(list, "--rollout", "r2")...)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "r2" {
		t.Fatalf("enqueue: exit %d, stdout %q\n%s", r.code, r.stdout, r.stderr)
	}
	// The worker polls; give it time to (wrongly) take something.
	time.Sleep(500 * time.Millisecond)
	var st statusResult
	e.jsonOf(&st, "status", "r2")
	if st.Pending != 30 || st.Done || !st.QueuePaused {
		t.Fatalf("paused rollout: %+v", st)
	}
	r = e.run("", "status", "r2")
	if !strings.Contains(r.stdout, "PAUSED") {
		t.Errorf("status does not say the queue is paused:\n%s", r.stdout)
	}

	var cr cancelResult
	e.jsonOf(&cr, "cancel", "r2")
	if cr.Cancelled != 30 || cr.TasksDeleted != 30 || cr.Running != 0 {
		t.Errorf("cancel: %+v", cr)
	}
	e.jsonOf(&cr, "cancel", "r2")
	if cr.Cancelled != 0 {
		t.Errorf("second cancel: %+v", cr)
	}
	e.jsonOf(&pr, "resume")
	if pr.Paused || !pr.Changed {
		t.Errorf("resume: %+v", pr)
	}
	e.jsonOf(&st, "status", "r2", "--watch", "--interval", "50ms", "--timeout", "30s")
	if !st.Done || st.Cancelled != 30 || st.Succeeded != 0 || st.QueuePaused {
		t.Errorf("after cancel and resume: %+v", st)
	}
	// Nothing is left in the queue to call the API later.
	time.Sleep(300 * time.Millisecond)
	if n := e.api.TotalCalls(); n != 0 {
		t.Errorf("the API saw %d calls for a cancelled rollout", n)
	}
	// Re-enqueueing a cancelled rollout does not revive it.
	r = e.run("", enqueueArgs(list, "--rollout", "r2", "--json")...)
	var res enqueueResult
	json.Unmarshal([]byte(r.stdout), &res)
	if r.code != 0 || res.Enqueued != 0 || res.AlreadyEnqueued != 30 {
		t.Errorf("re-enqueue of a cancelled rollout: exit %d %+v", r.code, res)
	}
}

func TestE2EBadInputWritesNothing(t *testing.T) {
	e := newEnv(t, false)
	good := makeOrgs(3)
	for name, content := range map[string]string{
		"empty":         "",
		"comments":      "# a\n# b\n",
		"nul":           good[0] + "\n" + good[1][:10] + "\x00" + good[1][11:] + "\n",
		"long line":     good[0] + "\n" + strings.Repeat("7", 10<<20) + "\n",
		"latin-1":       good[0] + "\nM\xfcller\n",
		"passwd":        "../../etc/passwd\n" + good[0] + "\n",
		"space":         good[0] + "\n" + good[1][:5] + " " + good[1][6:] + "\n",
		"slash":         good[0] + "/x\n",
		"csv no column": "org,name\n" + good[0] + ",x\n",
	} {
		r := e.run("", enqueueArgs(writeFile(t, "orgs.txt", content))...)
		if r.code != 2 {
			t.Errorf("%s: exit %d, want 2\n%s", name, r.code, r.stderr)
		}
	}
	r := e.run("", enqueueArgs(filepath.Join(t.TempDir(), "missing.txt"))...)
	if r.code != 2 || !strings.Contains(r.stderr, "no such file") {
		t.Errorf("missing file: exit %d\n%s", r.code, r.stderr)
	}
	r = e.run(strings.Join(good, "\n"), enqueueArgs("-", "--dry-run")...)
	if r.code != 0 || !strings.Contains(r.stdout, "3 organisations") {
		t.Errorf("dry run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if n := e.redis.Client().DBSize(context.Background()).Val(); n != 0 {
		keys := e.redis.Client().Keys(context.Background(), "*").Val()
		t.Errorf("bad input and a dry run left %d keys in Redis: %v", n, keys)
	}

	// --skip-invalid enqueues the valid ones and still lists the others.
	r = e.run("", enqueueArgs(writeFile(t, "orgs.txt", good[0]+"\nbad\n"+good[1]+"\n"), "--skip-invalid", "--json", "--rollout", "r3")...)
	var res enqueueResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || r.code != 0 {
		t.Fatalf("skip-invalid: exit %d %v\n%s", r.code, err, r.stderr)
	}
	if res.Enqueued != 2 || res.Invalid != 1 || !strings.Contains(r.stderr, ":2: invalid organisation ID") {
		t.Errorf("skip-invalid: %+v\n%s", res, r.stderr)
	}
}

func TestE2EUnknownRollout(t *testing.T) {
	e := newEnv(t, false)
	for _, args := range [][]string{
		{"status", "nope"},
		{"status", "nope", "--watch"},
		{"report", "nope", "--format", "csv"},
		{"report", "nope", "--format", "json"},
		{"retry", "nope"},
		{"cancel", "nope"},
	} {
		r := e.run("", args...)
		if r.code != 2 || !strings.Contains(r.stderr, `enqueue: rollout "nope" not found`) {
			t.Errorf("%v: exit %d\n%s", args, r.code, r.stderr)
		}
		if r.stdout != "" {
			t.Errorf("%v: stdout %q", args, r.stdout)
		}
	}
	// An empty report of a rollout that exists is still valid output.
	r := e.run("", "rollouts", "--json")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("rollouts on an empty Redis: exit %d %q", r.code, r.stdout)
	}
}

func TestE2ERedisUnreachable(t *testing.T) {
	bin := binary(t)
	// A port nobody listens on, and a loopback listener that accepts and
	// never answers (a hung or firewalled Redis): both must end with a clear
	// message within seconds, not a hang. Tests never leave loopback.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	for _, url := range []string{"redis://127.0.0.1:1/0", "redis://" + silent.Addr().String() + "/0"} {
		start := time.Now()
		r := runBinary(t, bin, []string{"REDIS_URL=" + url}, "", "status", "r1")
		took := time.Since(start)
		if r.code != 1 || !strings.Contains(r.stderr, "unreachable") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%s: exit %d\n%s", url, r.code, r.stderr)
		}
		t.Logf("%s: %s after %s", url, strings.TrimSpace(r.stderr), took.Round(time.Millisecond))
	}
}

func readCSV(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
