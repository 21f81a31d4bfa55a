package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestListReadingStopsOnSignal: SIGINT or SIGTERM while enqueue reads a
// slow --orgs - pipe stops it at once with exit status 1 and a clear line,
// instead of waiting for the input to end.
func TestListReadingStopsOnSignal(t *testing.T) {
	bin := binary(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer pw.Close()
			cmd := exec.Command(bin, enqueueArgs("-", "--dry-run")...)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
			cmd.Stdin = pr
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pr.Close()
			io.WriteString(pw, orgA+"\n")
			time.Sleep(300 * time.Millisecond) // reading, pipe still open
			cmd.Process.Signal(sig)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 1 {
					t.Errorf("exit %v, want status 1\n%s", err, stderr.String())
				}
				if !strings.Contains(stderr.String(), "interrupted while reading stdin (after line 1); nothing was enqueued") {
					t.Errorf("stderr:\n%s", stderr.String())
				}
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("enqueue still reading 5 s after %s", sig)
			}
		})
	}
}

// TestEndlessListIsRefused: --orgs /dev/zero ends by itself, as bad input
// naming the line, without growing memory.
func TestEndlessListIsRefused(t *testing.T) {
	bin := binary(t)
	start := time.Now()
	r := runBinary(t, bin, nil, "", enqueueArgs("/dev/zero", "--dry-run")...)
	if r.code != 2 || !strings.Contains(r.stderr, "/dev/zero: line 1: line too long") {
		t.Errorf("exit %d:\n%s", r.code, r.stderr)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("took %s", d)
	}
}
