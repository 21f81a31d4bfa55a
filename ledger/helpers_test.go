package ledger_test

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/versori"
)

// clock is a settable clock for Options.Clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.UnixMilli(1_700_000_000_000)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type backend struct {
	name string
	rdb  redis.UniversalClient
}

// backends returns miniredis, and a real redis-server when one can be
// started, so that every behaviour is checked against both Lua engines
// (gopher-lua with its cjson stand-in, and Redis's own).
func backends(t *testing.T) []backend {
	t.Helper()
	mr := miniredis.RunT(t)
	mc := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { mc.Close() })
	bs := []backend{{"miniredis", mc}}
	if testing.Short() || !haveRedisServer(t) {
		return bs
	}
	s := redistest.Start(t, redistest.Options{})
	bs = append(bs, backend{"redis", s.Client()})
	if cluster != nil {
		bs = append(bs, backend{"cluster", cluster})
	}
	return bs
}

// haveRedisServer reports whether redis-server is installed, failing the
// test when it is required (as redistest does) but missing. Without it the
// tests still run on miniredis.
func haveRedisServer(t *testing.T) bool {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("REDISTEST_REQUIRED") == "1" {
			t.Fatal("redis-server not found on PATH and REDISTEST_REQUIRED=1")
		}
		return false
	}
	return true
}

// cluster is a one-node Redis Cluster shared by the tests of this package
// (it takes seconds to become ready), started by TestMain; nil without
// redis-server or with -short.
var cluster *redis.ClusterClient

func TestMain(m *testing.M) {
	flag.Parse()
	var stop func()
	if !testing.Short() {
		if _, err := exec.LookPath("redis-server"); err == nil {
			var err error
			cluster, stop, err = startCluster()
			if err != nil {
				fmt.Fprintln(os.Stderr, "ledger tests:", err)
				os.Exit(1)
			}
		}
	}
	code := m.Run()
	if stop != nil {
		stop()
	}
	os.Exit(code)
}

// startCluster starts a one-node Redis Cluster owning every slot. One node
// is enough to prove the key layout: a cluster node refuses multi-key
// commands and scripts whose keys hash to different slots.
func startCluster() (c *redis.ClusterClient, stop func(), err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir, err := os.MkdirTemp("", "ledger-cluster-")
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command("redis-server",
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "",
		"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"),
		"--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	c = redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{addr}})
	stop = func() {
		c.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		os.RemoveAll(dir)
	}
	if err := waitCluster(addr); err != nil {
		stop()
		return nil, nil, err
	}
	return c, stop, nil
}

func waitCluster(addr string) error {
	node := redis.NewClient(&redis.Options{Addr: addr})
	defer node.Close()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	for node.Ping(ctx).Err() != nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster node %s did not start", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := node.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		return fmt.Errorf("cluster addslotsrange: %w", err)
	}
	for {
		info, _ := node.ClusterInfo(ctx).Result()
		if strings.Contains(info, "cluster_state:ok") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster %s not ready: %s", addr, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// forEach runs fn once per backend, each with its own key prefix.
func forEach(t *testing.T, fn func(t *testing.T, rdb redis.UniversalClient, prefix string)) {
	t.Helper()
	bs := backends(t)
	for _, b := range bs {
		t.Run(b.name, func(t *testing.T) {
			prefix := "test:" + strings.ReplaceAll(t.Name(), "/", ":")
			fn(t, b.rdb, prefix)
		})
	}
}

// newLedger makes a ledger with a fake clock and a rollout "r1" holding the
// given organisations.
func newLedger(t *testing.T, rdb redis.UniversalClient, prefix string, orgs ...string) (*ledger.Ledger, *clock) {
	t.Helper()
	clk := newClock()
	l := ledger.New(rdb, ledger.Options{Prefix: prefix, Clock: clk.Now})
	ctx := context.Background()
	if _, err := l.CreateRollout(ctx, ledger.Rollout{ID: "r1", ConnectorID: "c1", Version: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	if len(orgs) > 0 {
		if _, err := l.AddOrgs(ctx, "r1", oids(orgs...)); err != nil {
			t.Fatal(err)
		}
	}
	return l, clk
}

func orgIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("org%06d", i)
	}
	return ids
}

func counts(t *testing.T, l *ledger.Ledger, id string) ledger.Counts {
	t.Helper()
	_, c, err := l.Rollout(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// checkCounts fails unless the stored counters equal want and a recount
// from the records.
func checkCounts(t *testing.T, l *ledger.Ledger, id string, want ledger.Counts) {
	t.Helper()
	got := counts(t, l, id)
	if !equalCounts(got, want) {
		t.Errorf("counts = %s\nwant     %s", fmtCounts(got), fmtCounts(want))
	}
	re, err := l.Recount(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if !equalCounts(got, re) {
		t.Errorf("counters %s\ndisagree with records %s", fmtCounts(got), fmtCounts(re))
	}
}

func equalCounts(a, b ledger.Counts) bool {
	return fmtCounts(a) == fmtCounts(b)
}

// fmtCounts prints counts with empty maps and nil maps alike (fmt sorts
// map keys).
func fmtCounts(c ledger.Counts) string {
	norm := func(m map[string]int64) map[string]int64 {
		out := map[string]int64{}
		for k, v := range m {
			if v != 0 {
				out[k] = v
			}
		}
		return out
	}
	return fmt.Sprintf("total=%d pending=%d retrying=%d succeeded=%d failed=%d cancelled=%d class=%v retry=%v version=%v",
		c.Total, c.Pending, c.Retrying, c.Succeeded, c.Failed, c.Cancelled,
		norm(c.ByClass), norm(c.RetryingByClass), norm(c.ByVersion))
}

// oids converts test IDs (not ULIDs here: the ledger takes parsed IDs and
// does not check them again) to the ledger's type.
func oids(ss ...string) []versori.OrgID {
	out := make([]versori.OrgID, len(ss))
	for i, s := range ss {
		out[i] = versori.OrgID(s)
	}
	return out
}
