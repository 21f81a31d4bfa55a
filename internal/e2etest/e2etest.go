// Package e2etest runs the real binaries for end-to-end tests: it builds
// cmd/worker, cmd/enqueue and cmd/fakeapi once per test process, starts
// worker processes with the environment a user would give them, waits for
// them to be ready, and stops, signals or kills them.
//
// Tests pair it with internal/redistest (a real redis-server) and, usually,
// an in-process versoritest.Server whose counters the test reads.
package e2etest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildMu  sync.Mutex
	buildDir string
	built    = map[string]error{}
)

// Bin builds ./cmd/<name> (once per test process) and returns the path of
// the binary. Call Cleanup from TestMain to remove what was built.
func Bin(tb testing.TB, name string) string {
	tb.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir == "" {
		dir, err := os.MkdirTemp("", "import-worker-e2e-")
		if err != nil {
			tb.Fatalf("e2etest: %v", err)
		}
		buildDir = dir
	}
	path := filepath.Join(buildDir, name)
	err, done := built[name]
	if !done {
		err = build(name, path)
		built[name] = err
	}
	if err != nil {
		tb.Fatalf("e2etest: %v", err)
	}
	return path
}

func build(name, path string) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	cmd := exec.Command("go", "build", "-o", path, "./cmd/"+name)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/%s: %v\n%s", name, err, out)
	}
	return nil
}

// Cleanup removes the built binaries. Call it at the end of TestMain.
func Cleanup() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

func moduleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("cannot locate the module root")
	}
	return filepath.Abs(filepath.Join(filepath.Dir(file), "..", ".."))
}

// FreeAddr returns a free 127.0.0.1:port.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// WorkerOptions start one worker process.
type WorkerOptions struct {
	// Bin is the worker binary.
	Bin string
	// Env holds the variables to set (REDIS_URL, VERSORI_BASE_URL, ...).
	// METRICS_ADDR is chosen free unless set. Nothing else is inherited but
	// PATH and HOME, so a test sees what a user would configure.
	Env map[string]string
	// Args are extra command-line arguments.
	Args []string
	// Name labels the process in logs. Default "worker".
	Name string
	// NoWait skips waiting for /readyz.
	NoWait bool
}

// Process is a running binary.
type Process struct {
	tb      testing.TB
	Name    string
	Cmd     *exec.Cmd
	Addr    string // METRICS_ADDR
	logPath string
	done    chan struct{}
	exitErr error
}

// StartWorker starts a worker and waits until /readyz answers 200. The
// process is killed when the test ends, if still running.
func StartWorker(tb testing.TB, o WorkerOptions) *Process {
	tb.Helper()
	if o.Name == "" {
		o.Name = "worker"
	}
	env := map[string]string{}
	for k, v := range o.Env {
		env[k] = v
	}
	if env["METRICS_ADDR"] == "" {
		env["METRICS_ADDR"] = FreeAddr(tb)
	}
	p := start(tb, o.Name, o.Bin, o.Args, env)
	p.Addr = env["METRICS_ADDR"]
	if !o.NoWait {
		p.WaitReady(20 * time.Second)
	}
	return p
}

func start(tb testing.TB, name, bin string, args []string, env map[string]string) *Process {
	tb.Helper()
	logf, err := os.CreateTemp("", "e2e-"+name+"-*.log")
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	p := &Process{tb: tb, Name: name, Cmd: cmd, logPath: logf.Name(), done: make(chan struct{})}
	go func() {
		p.exitErr = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	tb.Cleanup(func() {
		p.Kill()
		if tb.Failed() {
			tb.Logf("--- log of %s (last 40 lines):\n%s", name, tail(p.Logs(), 40))
		}
		os.Remove(p.logPath)
	})
	return p
}

// WaitReady polls /readyz until it answers 200.
func (p *Process) WaitReady(timeout time.Duration) {
	p.tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.done:
			p.tb.Fatalf("%s exited before it was ready (%v):\n%s", p.Name, p.exitErr, tail(p.Logs(), 40))
		default:
		}
		resp, err := http.Get("http://" + p.Addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			p.tb.Fatalf("%s not ready after %s:\n%s", p.Name, timeout, tail(p.Logs(), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) {
	_ = p.Cmd.Process.Signal(sig)
}

// Kill sends SIGKILL and waits for the process to go.
func (p *Process) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Wait waits for the process to exit and returns its exit code (-1 if it
// did not exit within timeout or was killed by a signal).
func (p *Process) Wait(timeout time.Duration) int {
	select {
	case <-p.done:
	case <-time.After(timeout):
		return -1
	}
	if p.Cmd.ProcessState == nil {
		return -1
	}
	return p.Cmd.ProcessState.ExitCode()
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Logs returns everything the process wrote so far.
func (p *Process) Logs() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// Scrape returns the text of /metrics.
func (p *Process) Scrape() (string, error) {
	resp, err := http.Get("http://" + p.Addr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// Run runs a binary to completion with the given environment and stdin and
// returns its stdout, stderr and exit code.
func Run(ctx context.Context, bin string, env map[string]string, stdin io.Reader, args ...string) (stdout, stderr string, code int) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr, cmd.Stdin = &out, &errb, stdin
	err := cmd.Run()
	code = 0
	if err != nil {
		code = -1
		if cmd.ProcessState != nil {
			code = cmd.ProcessState.ExitCode()
		}
	}
	return out.String(), errb.String(), code
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
