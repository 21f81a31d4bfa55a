package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	testConnector = "01HZY3K8W0V6Q1B2C3D4E5F6G7"
	orgA          = "01J0000000000000000000000A"
	orgB          = "01J0000000000000000000000B"
	orgC          = "01J0000000000000000000000C"
)

type result struct {
	code           int
	stdout, stderr string
}

// cli runs the command in-process with env as its whole environment.
func cli(t *testing.T, env map[string]string, stdin string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	a := &app{
		stdin:      strings.NewReader(stdin),
		stdout:     &out,
		stderr:     &errOut,
		getenv:     func(k string) string { return env[k] },
		isTerminal: func(io.Writer) bool { return false },
		now:        time.Now,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := run(ctx, a, args)
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func enqueueArgs(orgs string, extra ...string) []string {
	return append([]string{"--connector", testConnector, "--version", "1.4.0", "--orgs", orgs}, extra...)
}

// TestBadLists covers every bad list the issue names. None of them may get
// as far as Redis: the URL points at a closed port, so reaching it would
// fail with exit status 1, not 2.
func TestBadLists(t *testing.T) {
	env := map[string]string{"REDIS_URL": "redis://127.0.0.1:1/0"}
	tests := []struct {
		name    string
		content string
		stderr  []string // each must appear in stderr
	}{
		{"empty file", "", []string{"no organisations in"}},
		{"only comments", "# nothing here\n\n   # still nothing\n", []string{"no organisations in"}},
		{"nul byte", orgA + "\n01J00000000000\x0000000000B\n", []string{":2: invalid organisation ID", "control character", "1 invalid organisation ID in"}},
		{"10 MB line", orgA + "\n" + strings.Repeat("x", 10<<20) + "\n" + orgB + "\n", []string{":2: line too long", "1 invalid organisation ID"}},
		{"latin-1", orgA + "\nM\xfcller-GmbH\n", []string{":2: invalid organisation ID", "not valid UTF-8"}},
		{"path traversal", "../../etc/passwd\n" + orgA + "\n", []string{`:1: invalid organisation ID "../../etc/passwd": contains "/"`}},
		{"spaces", orgA + "\n01J00000 00000000000000000B\n", []string{":2: invalid organisation ID", "whitespace"}},
		{"slashes", "01J0000000/000000000000000B\n", []string{":1: invalid organisation ID", `contains "/"`}},
		{"csv without organisation_id", "name,org_id\nacme," + orgA + "\n", []string{"line 1: CSV header has no organisation_id column", `"org_id"`}},
		{"several invalid, all reported", "bad1\n" + orgA + "\n\nbad2\n# c\nbad3\n", []string{":1: invalid", ":4: invalid", ":6: invalid", "3 invalid organisation IDs", "nothing enqueued", "--skip-invalid"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "orgs.txt", tt.content)
			r := cli(t, env, "", enqueueArgs(path)...)
			if r.code != exitUsage {
				t.Fatalf("exit %d, want 2; stderr:\n%s", r.code, r.stderr)
			}
			for _, want := range tt.stderr {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr lacks %q:\n%.2000s", want, r.stderr)
				}
			}
			if len(r.stderr) > 10000 {
				t.Errorf("stderr is %d bytes: a bad line must be quoted short, not echoed", len(r.stderr))
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q, want nothing", r.stdout)
			}
			// The same list on standard input fails the same way.
			r2 := cli(t, env, tt.content, enqueueArgs("-")...)
			if r2.code != exitUsage || strings.ReplaceAll(r2.stderr, "stdin", path) != r.stderr {
				t.Errorf("from stdin: exit %d, stderr:\n%.500s\nwant the file's:\n%.500s", r2.code, r2.stderr, r.stderr)
			}
		})
	}
}

func TestBadUsage(t *testing.T) {
	list := writeFile(t, "orgs.txt", orgA+"\n")
	dir := t.TempDir()
	env := map[string]string{"REDIS_URL": "redis://127.0.0.1:1/0"}
	tests := []struct {
		name   string
		env    map[string]string
		args   []string
		stderr string
	}{
		{"no arguments", env, nil, "nothing to do"},
		{"missing flags", env, []string{"--connector", testConnector}, "missing --version and --orgs"},
		{"missing file", env, enqueueArgs(filepath.Join(dir, "nope.txt")), "nope.txt: no such file or directory"},
		{"directory as list", env, enqueueArgs(dir), "is a directory"},
		{"bad connector", env, []string{"--connector", "acme", "--version", "1", "--orgs", list}, "--connector: invalid connector ID"},
		{"bad version", env, []string{"--connector", testConnector, "--version", "../x", "--orgs", list}, "--version: invalid version name"},
		{"bad rollout", env, enqueueArgs(list, "--rollout", "a b"), "--rollout: invalid rollout ID"},
		{"bad rate", env, enqueueArgs(list, "--dry-run", "--rate-limit", "fast"), `--rate-limit "fast"`},
		{"bad rate from env", map[string]string{"IMPORT_RATE_LIMIT": "-3"}, enqueueArgs(list, "--dry-run"), `IMPORT_RATE_LIMIT "-3"`},
		{"unknown flag", env, []string{"--frobnicate"}, "unknown flag: --frobnicate"},
		{"unknown command", env, []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"status without rollout", env, []string{"status"}, "missing rollout ID"},
		{"status with two", env, []string{"status", "a", "b"}, "one rollout ID"},
		{"status with a hostile rollout", env, []string{"status", "../../etc/passwd"}, "invalid rollout ID"},
		{"report with a bad format", env, []string{"report", "r1", "--format", "xml"}, `--format "xml"`},
		{"report with a bad state", env, []string{"report", "r1", "--state", "done"}, `--state "done"`},
		{"retry with a bad class", env, []string{"retry", "r1", "--class", "oops"}, `--class "oops"`},
		{"no redis configured", map[string]string{}, []string{"status", "r1"}, "set --redis-url or REDIS_URL"},
		{"bad redis url", map[string]string{"REDIS_URL": "http://x"}, []string{"rollouts"}, "unsupported scheme"},
		{"demo with REDIS_URL", env, []string{"demo"}, "refusing to run with --redis-url or REDIS_URL set"},
		{"demo with --redis-url", map[string]string{}, []string{"demo", "--redis-url", "redis://127.0.0.1:1"}, "refusing"},
		{"interval", env, []string{"status", "r1", "--watch", "--interval", "0s"}, "--interval must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := cli(t, tt.env, "", tt.args...)
			if r.code != exitUsage {
				t.Fatalf("exit %d, want 2; stderr:\n%s", r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, tt.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.stderr, r.stderr)
			}
			last := strings.TrimSpace(r.stderr[strings.LastIndex(strings.TrimSuffix(r.stderr, "\n"), "\n")+1:])
			if !strings.HasPrefix(last, "enqueue: ") {
				t.Errorf("the error is not one final 'enqueue: ...' line:\n%s", r.stderr)
			}
			if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic") {
				t.Errorf("stack trace in stderr:\n%s", r.stderr)
			}
		})
	}
}

func TestRedisUnreachable(t *testing.T) {
	// A closed port: refused at once. The commands must say so on one line
	// and exit 1, not hang or blame the user.
	env := map[string]string{"REDIS_URL": "redis://:secret@127.0.0.1:1/0"}
	list := writeFile(t, "orgs.txt", orgA+"\n")
	for _, args := range [][]string{
		enqueueArgs(list),
		{"status", "r1"},
		{"report", "r1"},
		{"retry", "r1"},
		{"cancel", "r1"},
		{"pause"},
		{"resume"},
		{"rollouts"},
	} {
		r := cli(t, env, "", args...)
		if r.code != exitRuntime {
			t.Errorf("%v: exit %d, want 1; stderr:\n%s", args, r.code, r.stderr)
		}
		if !strings.Contains(r.stderr, "enqueue: redis at redis://:xxxxx@127.0.0.1:1/0 unreachable") {
			t.Errorf("%v: stderr:\n%s", args, r.stderr)
		}
		if strings.Contains(r.stderr, "secret") {
			t.Errorf("%v: the password leaked: %s", args, r.stderr)
		}
	}
}

func TestDryRun(t *testing.T) {
	list := writeFile(t, "orgs.csv", "\uFEFFname,organisation_id\r\n# comment\r\nacme,"+orgA+"\r\nbeta,"+strings.ToLower(orgA)+"\r\ngamma,"+orgB+"\r\ndelta,nope\r\n")
	// No Redis at all: a dry run writes nothing and needs nothing.
	env := map[string]string{"IMPORT_RATE_LIMIT": "0.5"}

	r := cli(t, env, "", enqueueArgs(list, "--dry-run")...)
	if r.code != exitUsage || !strings.Contains(r.stderr, ":6: invalid organisation ID") {
		t.Fatalf("dry run with an invalid ID: exit %d, stderr:\n%s", r.code, r.stderr)
	}

	r = cli(t, env, "", enqueueArgs(list, "--dry-run", "--skip-invalid", "--json")...)
	if r.code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, r.stdout)
	}
	want := map[string]any{
		"rollout_id": "", "enqueued": 0.0, "already_enqueued": 0.0, "duplicates": 1.0, "invalid": 1.0,
		"organisations": 2.0, "dry_run": true, "eta_seconds": 4.0, "rate_limit": 0.5,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}

	r = cli(t, nil, "", enqueueArgs(list, "--dry-run", "--skip-invalid", "--rate-limit", "1")...)
	if r.code != exitOK || !strings.Contains(r.stdout, "2 organisations") || !strings.Contains(r.stdout, "about 2s") || !strings.Contains(r.stdout, "nothing was written") {
		t.Errorf("exit %d, stdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

func TestInvalidJSONOutput(t *testing.T) {
	// --json still describes a refused list on stdout, for scripts.
	list := writeFile(t, "orgs.txt", orgA+"\nbad\n"+orgA+"\n")
	r := cli(t, nil, "", enqueueArgs(list, "--json")...)
	if r.code != exitUsage {
		t.Fatalf("exit %d", r.code)
	}
	var got enqueueResult
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, r.stdout)
	}
	if got.Invalid != 1 || got.Duplicates != 1 || got.Enqueued != 0 || got.Organisations != 1 {
		t.Errorf("got %+v", got)
	}
}

func TestHelp(t *testing.T) {
	for _, cmd := range []string{"", "status", "report", "retry", "cancel", "pause", "resume", "rollouts", "demo"} {
		args := []string{"--help"}
		if cmd != "" {
			args = []string{cmd, "--help"}
		}
		r := cli(t, nil, "", args...)
		if r.code != exitOK {
			t.Errorf("%s --help: exit %d", cmd, r.code)
		}
		if !strings.Contains(r.stdout, "Usage:") || !strings.Contains(r.stdout, "Examples:") {
			t.Errorf("%s --help lacks usage or examples:\n%s", cmd, r.stdout)
		}
	}
}

// TestMessagesCountAndRate: counts are pluralised ("1 organisation"), a
// short ETA is "under a second" (not "about under a second"), and
// --rate-limit takes the worker's bounds, with 0 meaning unlimited.
func TestMessagesCountAndRate(t *testing.T) {
	one := writeFile(t, "one.txt", orgA+"\n")
	r := cli(t, nil, "", enqueueArgs(one, "--dry-run", "--rate-limit", "100")...)
	if r.code != exitOK || !strings.Contains(r.stdout, "1 organisation to import") || !strings.Contains(r.stdout, "takes under a second") {
		t.Errorf("exit %d, stdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	for _, bad := range []string{"20000", "0.0001", "-1", "NaN"} {
		r = cli(t, nil, "", enqueueArgs(one, "--dry-run", "--rate-limit", bad)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "from 0.001 to 10000") {
			t.Errorf("--rate-limit %s: exit %d: %s", bad, r.code, r.stderr)
		}
	}
	r = cli(t, map[string]string{"IMPORT_RATE_LIMIT": "0"}, "", enqueueArgs(one, "--dry-run")...)
	if r.code != exitOK || !strings.Contains(r.stdout, "no rate limit") {
		t.Errorf("IMPORT_RATE_LIMIT=0: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	// A full-width digit is named, not counted as a length in bytes.
	wide := writeFile(t, "wide.txt", orgA[:25]+"\uff11\n")
	r = cli(t, nil, "", enqueueArgs(wide, "--dry-run")...)
	if r.code != exitUsage || !strings.Contains(r.stderr, "character 26 ('１') is not Crockford base32") {
		t.Errorf("full-width digit: exit %d: %s", r.code, r.stderr)
	}
}

// TestConnectorFlagCanonical: --connector in lower case is the same
// connector (printed in canonical form), and a full-width digit in it is
// named.
func TestConnectorFlagCanonical(t *testing.T) {
	one := writeFile(t, "one.txt", orgA+"\n")
	r := cli(t, nil, "", "--connector", strings.ToLower(testConnector), "--version", "1.4.0", "--orgs", one, "--dry-run", "--json")
	if r.code != exitOK || !strings.Contains(r.stdout, `"connector_id":"`+testConnector+`"`) {
		t.Errorf("lower-case connector: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	r = cli(t, nil, "", "--connector", testConnector[:25]+"\uff17", "--version", "1.4.0", "--orgs", one, "--dry-run")
	if r.code != exitUsage || !strings.Contains(r.stderr, "character 26") {
		t.Errorf("full-width digit in --connector: exit %d: %s", r.code, r.stderr)
	}
}
