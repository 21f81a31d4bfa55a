package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/versori"
)

func TestSafeCell(t *testing.T) {
	for in, want := range map[string]string{
		"":                         "",
		"plain":                    "plain",
		"=HYPERLINK(\"http://x\")": "'=HYPERLINK(\"http://x\")",
		"+1":                       "'+1",
		"-2+3":                     "'-2+3",
		"@SUM(A1)":                 "'@SUM(A1)",
		"\tx":                      "'\tx",
		"1.4.0":                    "1.4.0",
		"a=b":                      "a=b",
	} {
		if got := safeCell(in); got != want {
			t.Errorf("safeCell(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMajorityVersion(t *testing.T) {
	for _, tt := range []struct {
		in   map[string]int64
		want string
	}{
		{nil, ""},
		{map[string]int64{"1.0": 5}, ""},
		{map[string]int64{"1.0": 5, "1.1": 2}, "1.0"},
		{map[string]int64{"1.0": 2, "1.1": 5}, "1.1"},
		{map[string]int64{"b": 3, "a": 3}, "a"}, // a tie is broken the same way every time
	} {
		if got := majorityVersion(tt.in); got != tt.want {
			t.Errorf("majorityVersion(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestReportFlagsVersionMismatch builds a rollout of "latest" that
// straddled a new publication, straight in the ledger, and checks the
// report flags the minority, keeps hostile API text out of spreadsheets,
// and filters by state and class.
func TestReportFlagsVersionMismatch(t *testing.T) {
	s := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	led := ledger.New(s.Client(), ledger.Options{})
	if _, err := led.CreateRollout(ctx, ledger.Rollout{ID: "r1", ConnectorID: testConnector, Version: "latest"}); err != nil {
		t.Fatal(err)
	}
	orgs := []string{orgA, orgB, orgC, "01J0000000000000000000000D", "01J0000000000000000000000E"}
	if _, err := led.AddOrgs(ctx, "r1", oids(orgs...)); err != nil {
		t.Fatal(err)
	}
	finish := func(org string, o ledger.Outcome) {
		t.Helper()
		o.CountAttempt = true
		if _, err := led.Finish(ctx, "r1", versori.OrgID(org), o); err != nil {
			t.Fatal(err)
		}
	}
	finish(orgs[0], ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200, Version: "1.4.0", Duration: 40 * time.Millisecond})
	finish(orgs[1], ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200, Version: "1.4.0"})
	finish(orgs[2], ledger.Outcome{State: ledger.Succeeded, Class: "already_present", HTTPStatus: 409, Version: "1.5.0"})
	finish(orgs[3], ledger.Outcome{State: ledger.Failed, Class: "invalid", HTTPStatus: 400, Error: `=HYPERLINK("http://evil","x")`})
	env := map[string]string{"REDIS_URL": s.URL()}

	r := cli(t, env, "", "report", "r1", "--format", "json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var rows []reportRow
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	byOrg := map[string]reportRow{}
	for _, row := range rows {
		byOrg[row.OrgID] = row
	}
	if len(rows) != 5 || len(byOrg) != 5 {
		t.Fatalf("%d rows for %d organisations", len(rows), len(byOrg))
	}
	if !byOrg[orgC].VersionMismatch || byOrg[orgA].VersionMismatch || byOrg[orgs[3]].VersionMismatch {
		t.Errorf("version_mismatch should flag %s only: %+v", orgC, rows)
	}
	if p := byOrg[orgs[4]]; p.State != "pending" || p.Attempts != 0 || p.FinishedAt != "" {
		t.Errorf("pending row %+v", p)
	}
	if a := byOrg[orgA]; a.DurationMS != 40 || a.FinishedAt == "" || a.Class != "imported" || a.HTTPStatus != 200 || a.Attempts != 1 {
		t.Errorf("succeeded row %+v", a)
	}
	if !strings.Contains(r.stderr, "1 organisation got another version") {
		t.Errorf("no warning about the straddled publication:\n%s", r.stderr)
	}

	r = cli(t, env, "", "report", "r1", "--format", "csv", "--state", "failed")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], `"'=HYPERLINK(""http://evil"",""x"")"`) {
		t.Errorf("failed-only CSV:\n%s", r.stdout)
	}

	r = cli(t, env, "", "report", "r1", "--format", "ndjson", "--state", "succeeded", "--class", "already_present")
	if n := strings.Count(r.stdout, "\n"); n != 1 || !strings.Contains(r.stdout, orgC) {
		t.Errorf("ndjson filtered by class:\n%s", r.stdout)
	}

	r = cli(t, env, "", "status", "r1")
	if !strings.Contains(r.stdout, "straddled a new publication") {
		t.Errorf("status does not flag the two versions:\n%s", r.stdout)
	}

	// An empty selection is still a valid document.
	r = cli(t, env, "", "report", "r1", "--format", "json", "--state", "cancelled")
	if strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("empty JSON report = %q", r.stdout)
	}
}

func TestWatchWithoutTerminal(t *testing.T) {
	// Not a terminal: --watch writes progress lines to stderr, ends when the
	// rollout is done, and --timeout bounds it.
	s := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	led := ledger.New(s.Client(), ledger.Options{})
	led.CreateRollout(ctx, ledger.Rollout{ID: "r1", ConnectorID: testConnector, Version: "1.0.0"})
	led.AddOrgs(ctx, "r1", []versori.OrgID{orgA, orgB})
	env := map[string]string{"REDIS_URL": s.URL()}

	r := cli(t, env, "", "status", "r1", "--watch", "--interval", "20ms", "--timeout", "200ms")
	if r.code != 1 || !strings.Contains(r.stderr, "not done after 200ms") || !strings.Contains(r.stderr, "0/2 finished") {
		t.Errorf("timeout: exit %d\n%s", r.code, r.stderr)
	}

	go func() {
		time.Sleep(100 * time.Millisecond)
		led.Finish(ctx, "r1", orgA, ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200})
		led.Cancel(ctx, "r1", []versori.OrgID{orgB})
	}()
	r = cli(t, env, "", "status", "r1", "--watch", "--interval", "20ms", "--timeout", "30s")
	if r.code != 0 || !strings.Contains(r.stderr, "100.0%  2/2 finished: 1 succeeded, 0 failed, 1 cancelled") || !strings.Contains(r.stdout, "state      done") {
		t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

// TestReportOutputSpecialFiles checks that --output writes into a FIFO in
// place (renaming over it would leave its reader with nothing and replace it
// with a regular file), refuses a directory with a clear error, and still
// writes a regular file whole.
func TestReportOutputSpecialFiles(t *testing.T) {
	s := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	led := ledger.New(s.Client(), ledger.Options{})
	if _, err := led.CreateRollout(ctx, ledger.Rollout{ID: "r1", ConnectorID: testConnector, Version: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := led.AddOrgs(ctx, "r1", []versori.OrgID{orgA, orgB}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"REDIS_URL": s.URL()}
	dir := t.TempDir()

	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		f, err := os.Open(fifo)
		if err != nil {
			got <- nil
			return
		}
		defer f.Close()
		b, _ := io.ReadAll(f)
		got <- b
	}()
	r := cli(t, env, "", "report", "r1", "--format", "csv", "--output", fifo)
	if r.code != 0 {
		t.Fatalf("report to a FIFO: exit %d: %s", r.code, r.stderr)
	}
	select {
	case b := <-got:
		if n := strings.Count(string(b), "\n"); n != 3 {
			t.Errorf("the FIFO's reader got %d lines, want 3 (header and 2 rows):\n%s", n, b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the FIFO's reader got no end of file")
	}
	if fi, err := os.Lstat(fifo); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("the FIFO was replaced: %v, %v", fi.Mode(), err)
	}

	r = cli(t, env, "", "report", "r1", "--output", dir)
	if r.code != 2 || !strings.Contains(r.stderr, "is a directory") || strings.Contains(r.stderr, "rename") {
		t.Errorf("report to a directory: exit %d: %s", r.code, r.stderr)
	}

	file := filepath.Join(dir, "report.csv")
	r = cli(t, env, "", "report", "r1", "--output", file)
	b, err := os.ReadFile(file)
	if r.code != 0 || err != nil || strings.Count(string(b), "\n") != 3 {
		t.Errorf("report to a file: exit %d, %v: %s\n%s", r.code, err, r.stderr, b)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("temporary files left behind: %v", entries)
	}

	// /dev/null is only looked at: it must be a character device, which
	// is what the in-place branch serves.
	if fi, err := os.Stat(os.DevNull); err == nil && fi.Mode().IsRegular() {
		t.Errorf("%s is a regular file on this machine", os.DevNull)
	}
}

// TestWatchRetriesFailedReads stops Redis while status --watch runs: the
// watch keeps trying within --timeout and ends when the rollout does, once
// Redis is back. A negative --timeout is bad usage, not "interrupted".
func TestWatchRetriesFailedReads(t *testing.T) {
	s := redistest.Start(t, redistest.Options{AppendOnly: true})
	ctx := context.Background()
	led := ledger.New(s.Client(), ledger.Options{})
	led.CreateRollout(ctx, ledger.Rollout{ID: "r1", ConnectorID: testConnector, Version: "1.0.0"})
	led.AddOrgs(ctx, "r1", []versori.OrgID{orgA})
	env := map[string]string{"REDIS_URL": s.URL()}

	r := cli(t, env, "", "status", "r1", "--watch", "--timeout", "-1s")
	if r.code != 2 || !strings.Contains(r.stderr, "must not be negative") {
		t.Errorf("negative --timeout: exit %d: %s", r.code, r.stderr)
	}

	done := make(chan result, 1)
	go func() { done <- cli(t, env, "", "status", "r1", "--watch", "--interval", "50ms", "--timeout", "60s") }()
	time.Sleep(300 * time.Millisecond)
	s.Stop()
	time.Sleep(time.Second)
	s.Resume()
	if _, err := ledger.New(s.Client(), ledger.Options{}).Finish(ctx, "r1", orgA, ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.code != 0 || !strings.Contains(r.stdout, "state      done") || !strings.Contains(r.stderr, "failed, retrying") {
			t.Errorf("watch across a Redis outage: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("the watch did not end after Redis came back")
	}
}

// oids converts IDs known canonical to the ledger's type.
func oids(ss ...string) []versori.OrgID {
	out := make([]versori.OrgID, len(ss))
	for i, s := range ss {
		out[i] = versori.OrgID(s)
	}
	return out
}
