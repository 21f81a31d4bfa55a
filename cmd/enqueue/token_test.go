package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/versori/import-worker/internal/apitoken"
)

func TestToken(t *testing.T) {
	var stdout, stderr bytes.Buffer
	a := &app{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" },
		isTerminal: func(io.Writer) bool { return false }, now: time.Now}
	if code := run(context.Background(), a, []string{"token", "--role", "operator", "--name", "ci"}); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %q", stdout.String())
	}
	es, err := apitoken.Parse(strings.NewReader(lines[1]))
	if err != nil || len(es) != 1 {
		t.Fatalf("line %q: %v", lines[1], err)
	}
	if e, ok := apitoken.NewSet(es).Lookup(lines[0]); !ok || e.Role != apitoken.Operator || e.Name != "ci" {
		t.Fatalf("token does not match its line: %+v %v", e, ok)
	}
	for _, args := range [][]string{{"token", "--role", "admin"}, {"token"}, {"token", "--role", "reader", "--name", "a b"}} {
		stdout.Reset()
		stderr.Reset()
		if code := run(context.Background(), a, args); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}
