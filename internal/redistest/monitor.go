package redistest

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Monitor records every command the server receives (redis-cli MONITOR), so
// a test can count the commands spent on one concern, e.g. those that touch
// the rate budget's key. MONITOR costs the server some throughput; use it
// for counting, not for timing.
type Monitor struct {
	tb   testing.TB
	cmd  *exec.Cmd
	path string
}

// Monitor starts recording. Stop it before counting.
func (s *Server) Monitor(tb testing.TB) *Monitor {
	tb.Helper()
	f, err := os.CreateTemp(tb.TempDir(), "monitor-*.log")
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command("redis-cli", "-h", "127.0.0.1", "-p", strconv.Itoa(s.port), "monitor")
	cmd.Stdout = f
	if err := cmd.Start(); err != nil {
		tb.Fatalf("redistest: redis-cli monitor: %v", err)
	}
	m := &Monitor{tb: tb, cmd: cmd, path: f.Name()}
	tb.Cleanup(m.Stop)
	// MONITOR starts asynchronously; wait for its OK line.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(m.path); strings.HasPrefix(string(b), "OK") {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.Close()
	return m
}

// Stop ends recording. Safe to call twice.
func (m *Monitor) Stop() {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	_ = m.cmd.Wait()
	m.cmd = nil
}

// Count returns how many commands sent by clients (not those run inside
// scripts) satisfy match. match gets the command line as MONITOR prints it,
// e.g. `"evalsha" "abc..." "1" "versori-import:ratebudget" ...`.
func (m *Monitor) Count(match func(cmdline string) bool) int {
	m.tb.Helper()
	f, err := os.Open(m.path)
	if err != nil {
		m.tb.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		// "1700000000.123456 [0 127.0.0.1:5555] "cmd" ..."; script-internal
		// commands show "[0 lua]" instead of a client address.
		i := strings.Index(line, "] ")
		if i < 0 || strings.Contains(line[:i], " lua") {
			continue
		}
		if match(line[i+2:]) {
			n++
		}
	}
	return n
}
