// Package redistest starts real redis-server processes for integration tests.
//
// Each server runs on a free loopback port in its own temporary directory and
// is stopped when the test ends, so tests never depend on a Redis that someone
// started by hand. Tests that need a real Redis call Start; when the
// redis-server binary is missing the test is skipped, unless
// REDISTEST_REQUIRED=1 (set by `make test`), in which case it fails: CI must
// never pass by silently skipping its integration tests.
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Options adjust the server. The zero value is an ephemeral server that keeps
// nothing on disk, with maxmemory-policy noeviction as production requires.
type Options struct {
	// AppendOnly turns on the append-only file, so that Restart keeps data.
	AppendOnly bool
	// Config, when not empty, is written to redis.conf in the server's
	// directory and given as the first argument: a sentinel
	// (Args "--sentinel") needs a config file it can rewrite.
	Config string
	// Args are extra command-line arguments, after the defaults (e.g.
	// "--cluster-enabled", "yes" or "--replicaof", "127.0.0.1", "6380").
	Args []string
}

// Server is a running redis-server owned by one test.
type Server struct {
	tb   testing.TB
	opts Options
	dir  string
	port int
	cmd  *exec.Cmd
}

// Start starts a redis-server for tb and registers its shutdown with tb.Cleanup.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	RequireBinaries(tb, "redis-server")
	s := &Server{tb: tb, opts: opts, dir: tb.TempDir(), port: freePort(tb)}
	s.startProcess()
	tb.Cleanup(s.Stop)
	return s
}

// RequireBinaries skips the test when one of the named programs (e.g.
// "redis-cli") is not on PATH, or fails it when REDISTEST_REQUIRED=1.
func RequireBinaries(tb testing.TB, names ...string) {
	tb.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			if os.Getenv("REDISTEST_REQUIRED") == "1" {
				tb.Fatalf("redistest: %s not found on PATH and REDISTEST_REQUIRED=1", name)
			}
			tb.Skipf("redistest: %s not found on PATH; set REDISTEST_REQUIRED=1 to fail instead", name)
		}
	}
}

func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("redistest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (s *Server) startProcess() {
	s.tb.Helper()
	var args []string
	if s.opts.Config != "" {
		conf := filepath.Join(s.dir, "redis.conf")
		if _, err := os.Stat(conf); err != nil { // a restart keeps what the server rewrote
			if err := os.WriteFile(conf, []byte(s.opts.Config), 0o600); err != nil {
				s.tb.Fatalf("redistest: %v", err)
			}
		}
		args = append(args, conf)
	}
	args = append(args,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--maxmemory-policy", "noeviction",
		"--daemonize", "no",
		"--logfile", filepath.Join(s.dir, "redis.log"),
	)
	if s.opts.AppendOnly {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	args = append(args, s.opts.Args...)
	s.cmd = exec.Command("redis-server", args...)
	if err := s.cmd.Start(); err != nil {
		s.tb.Fatalf("redistest: start redis-server: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr(), 200*time.Millisecond)
		if err == nil {
			fmt.Fprint(c, "PING\r\n")
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "+PONG") {
				return
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.tb.Fatalf("redistest: redis-server did not answer on %s within 10s: %s", s.Addr(), log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// URL is the server's redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Client returns a go-redis client for the server, closed when the test ends.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	s.tb.Cleanup(func() { c.Close() })
	return c
}

// Stop stops the server (SIGTERM, then SIGKILL after 5 s). Safe to call twice.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	cmd := s.cmd
	s.cmd = nil
	_ = cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Kill stops the server with SIGKILL, as a crash would: nothing is flushed
// and clients see their connections reset. Safe to call twice; Resume
// starts it again.
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	cmd := s.cmd
	s.cmd = nil
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// Port is the server's port.
func (s *Server) Port() int { return s.port }

// Dir is the server's directory (its log is redis.log there).
func (s *Server) Dir() string { return s.dir }

// Restart stops the server and starts it again on the same port and
// directory. With Options.AppendOnly the data survives.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	s.startProcess()
}

// Resume starts a server stopped by Stop again on the same port.
func (s *Server) Resume() {
	s.tb.Helper()
	s.startProcess()
}

// CommandStats returns INFO commandstats as a map from command name (lower
// case, e.g. "evalsha") to the number of calls.
func (s *Server) CommandStats(ctx context.Context) (map[string]int64, error) {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	return ParseCommandStats(c.Info(ctx, "commandstats").Val()), nil
}

// ParseCommandStats parses the text of INFO commandstats.
func ParseCommandStats(info string) map[string]int64 {
	out := map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		rest, ok := strings.CutPrefix(line, "cmdstat_")
		if !ok {
			continue
		}
		name, fields, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		for _, f := range strings.Split(fields, ",") {
			if v, ok := strings.CutPrefix(f, "calls="); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				out[name] = n
			}
		}
	}
	return out
}
